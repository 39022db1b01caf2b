"""A toy experiment: the one file a new figure needs (registered on import)."""

from nmelab.experiments import claims as C
from nmelab.experiments.base import Experiment, Point, register
from nmelab.experiments.report_blocks import Block
from nmelab.experiments.sweep import RunSpec

TOY_LINE = "toy line"


def points(scale):
    return [Point(TOY_LINE, 0.0, RunSpec("toy:run", {"toy": 1}, "toy-task"))]


def claims(table, scale, root):
    cells = C.difference(TOY_LINE, TOY_LINE, 0.0)
    return [C.Claim("toy1", "nowhere", "Toys work.", "toy − toy", C.measure(table, cells), 0, 1.0)]


@register
def experiment():
    return Experiment(
        name="toy",
        title="Toy: an experiment in one file",
        section="App. Z",
        points=points,
        describe=lambda scale: f"a toy at the {scale.name} scale",
        claims=claims,
        plot=lambda table, out_dir, scale, root: [],
        report_sections=lambda table, scale, root: [Block("p", "toy extra section")],
    )
