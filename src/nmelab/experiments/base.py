"""The experiment interface: :class:`Scale`, :class:`Point`, :class:`Experiment` and the registry.

This module is the one list of experiments. An experiment is one file that builds an
:class:`Experiment` and joins the registry with the :func:`register` decorator; the package's
``__init__`` imports that file (one line). Everything else - the command line, the sweep, the
plan and the report - asks the registry (:func:`names`, :func:`get`) and names no experiment.

It imports nothing else from nmelab, so any layer may import it without a cycle. A point's tasks
are the sweep's ``RunSpec`` objects; here they are only required to have a ``run_id``.

Example (a new figure, ``src/nmelab/experiments/figN.py``)::

    from nmelab.experiments.base import Experiment, register

    @register
    def experiment() -> Experiment:
        return Experiment(name="figN", title="...", section="§5", points=points,
                          describe=describe, claims=claims, plot=plot)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SCALES",
    "Experiment",
    "Point",
    "Scale",
    "get",
    "get_scale",
    "names",
    "register",
    "select",
    "unregister",
]


@dataclasses.dataclass(frozen=True)
class Scale:
    """A scale of the reproduction.

    Attributes:
      name: ``"quick"``, ``"small"`` or ``"paper"``.
      num_seeds: seeds per grid point.
      data_dir: the folder holding ``cifar10/`` and ``imagenet/`` (``paper`` only).
    """

    name: str
    num_seeds: int
    data_dir: str | None = None


SCALES: dict[str, Scale] = {
    "quick": Scale("quick", 3),
    "small": Scale("small", 5),
    "paper": Scale("paper", 5),
}
"""Every scale with its default seed count."""


def get_scale(name: str, data_dir: str | None = None, num_seeds: int | None = None) -> Scale:
    """The :class:`Scale` ``name`` with its data folder (and optionally another seed count).

    Raises:
      ValueError: an unknown scale, ``num_seeds < 2`` (no confidence interval), or ``paper``
        without ``data_dir``.
    """
    if name not in SCALES:
        raise ValueError(f"scale: expected one of {', '.join(SCALES)}, got {name!r}")
    scale = SCALES[name]
    if num_seeds is not None:
        if isinstance(num_seeds, bool) or not isinstance(num_seeds, int) or num_seeds < 2:
            raise ValueError(
                f"num_seeds: expected an integer >= 2 (a confidence interval needs 2), got "
                f"{num_seeds!r}"
            )
        scale = dataclasses.replace(scale, num_seeds=num_seeds)
    if name == "paper" and not data_dir:
        raise ValueError(
            "data_dir: the paper scale trains on CIFAR-10 and ImageNet and needs --data-dir DIR "
            "(with DIR/cifar10 and DIR/imagenet)"
        )
    return dataclasses.replace(scale, data_dir=data_dir)


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point of a figure: its tasks (together they hold every seed of the point).

    Attributes:
      line: the legend entry, e.g. ``"penalty, ReLU"``.
      x: the x value (ρ, β or σ²).
      specs: the tasks (sweep ``RunSpec`` objects): one task with the seeds vmapped inside it,
        or one task per seed. A single task is accepted and wrapped.
      panel: the panel of a multi-panel figure (``""`` for one panel).
    """

    line: str
    x: float
    specs: tuple[Any, ...]
    panel: str = ""

    def __post_init__(self) -> None:
        specs = (self.specs,) if hasattr(self.specs, "run_id") else tuple(self.specs)
        if not specs or not all(hasattr(s, "run_id") for s in specs):
            raise TypeError(f"specs: expected sweep tasks (RunSpec), got {self.specs!r}")
        object.__setattr__(self, "specs", specs)


def _no_sections(table: Any, scale: Scale, root: Path) -> list[Any]:
    return []


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named experiment: what it runs, what it claims, what it draws.

    Attributes:
      name: e.g. ``"fig2"``.
      title: one line, e.g. ``"Fig. 2: accuracy vs ρ, p = 1 gradient penalty, ReLU vs GELU"``.
      section: where the paper makes the claim, e.g. ``"§4.1, Fig. 2"``.
      points: ``points(scale) -> list[Point]``, the one place its grid is computed.
      describe: ``describe(scale) -> str``, the setup in prose (from the configs it trains).
      claims: ``claims(table, scale, root) -> list[Claim]`` from the points table; ``root`` is
        the sweep root, for experiments that read arrays from their work directories.
      plot: ``plot(table, out_dir, scale, root) -> list[Path]``, the figure files.
      report_sections: ``report_sections(table, scale, root) -> list[Block]``, extra report
        content (e.g. a table) shown after the figure; none by default.
    """

    name: str
    title: str
    section: str
    points: Callable[[Scale], list[Point]]
    describe: Callable[[Scale], str]
    claims: Callable[..., list[Any]]
    plot: Callable[..., list[Path]]
    report_sections: Callable[[Any, Scale, Path], list[Any]] = _no_sections


_REGISTRY: dict[str, Experiment] = {}


def register(factory: Callable[[], Experiment]) -> Experiment:
    """Decorator: build the experiment with ``factory()`` and add it to the registry.

    Report order is registration order (the import order of the package's ``__init__``).

    Raises:
      TypeError: ``factory`` does not return an :class:`Experiment`.
      ValueError: another experiment already has its name.
    """
    experiment = factory()
    if not isinstance(experiment, Experiment):
        raise TypeError(f"factory: expected it to return an Experiment, got {experiment!r}")
    if experiment.name in _REGISTRY:
        raise ValueError(f"name: an experiment named {experiment.name!r} is already registered")
    _REGISTRY[experiment.name] = experiment
    return experiment


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (for tests that register a toy experiment)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered experiment, in report order."""
    return tuple(_REGISTRY)


def get(name: str) -> Experiment:
    """The experiment ``name``.

    Raises:
      ValueError: an unknown name (the message lists the choices).
    """
    if name not in _REGISTRY:
        raise ValueError(f"experiment: expected one of {', '.join(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def select(requested: Sequence[str] | None) -> list[str]:
    """``requested`` checked against the registry (all experiments when ``None``/empty)."""
    chosen = list(requested or names())
    for name in chosen:
        get(name)
    return chosen
