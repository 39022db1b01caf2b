"""The experiment interface: one registry, a new experiment is one file, the plan is the sweep."""

import ast
import importlib
import json
import sys
from pathlib import Path

import pytest
from _synthetic import QUICK

import nmelab.experiments as experiments
from nmelab.cli import main
from nmelab.experiments import base, pipeline
from nmelab.experiments.planning import plan
from nmelab.experiments.report import build_report, write_report
from nmelab.experiments.sweep import SweepSummary

SRC = Path(experiments.__file__).parent
HERE = Path(__file__).parent


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    module = importlib.import_module("toy_experiment")  # the "one import"
    yield module
    base.unregister("toy")
    sys.modules.pop("toy_experiment", None)


def test_a_toy_experiment_is_one_file_and_the_report_shows_it(tmp_path, toy):
    assert "toy" in base.names()
    report = build_report(tmp_path, ["fig3", "toy"], QUICK, experiments.load_results(tmp_path))
    md = write_report(report, tmp_path)["md"].read_text()
    assert "Toy: an experiment in one file" in md and "toy extra section" in md
    assert "Claim toy1" in md and "a toy at the quick scale" in md
    assert [r.spec.name for r in plan(["toy"], QUICK)] == ["toy-task"]


def test_the_cli_reads_the_experiment_names_from_the_registry(toy, capsys):
    assert main(["reproduce", "--plan", "--experiments", "toy"]) == 0
    assert "toy-task" in capsys.readouterr().out


def test_the_registry_module_imports_nothing_else_from_nmelab():
    tree = ast.parse((SRC / "base.py").read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert not [m for m in imported if m and m.startswith("nmelab")]


def test_the_report_names_no_experiment():
    for file in ("report.py", "pipeline.py", "planning.py", "report_blocks.py"):
        source = (SRC / file).read_text()
        for name in base.names():
            assert f'"{name}"' not in source, (file, name)
    assert "mechanism" not in (SRC / "report.py").read_text()


@pytest.mark.parametrize("scale_name", ["quick", "small", "paper"])
def test_plan_lists_each_run_once_and_is_what_the_sweep_runs(tmp_path, monkeypatch, scale_name):
    data = tmp_path / "data"
    (data / "cifar10").mkdir(parents=True)
    (data / "imagenet").mkdir()
    scale = base.get_scale(scale_name, str(data) if scale_name == "paper" else None)
    runs = plan(base.names(), scale)
    ids = [r.spec.run_id for r in runs]
    assert len(ids) == len(set(ids))
    from_points = {
        s.run_id for n in base.names() for p in base.get(n).points(scale) for s in p.specs
    }
    assert set(ids) == from_points
    shared = next(r for r in runs if len(r.experiments) > 1)  # e.g. an SGD baseline
    assert shared.experiments == sorted(shared.experiments, key=base.names().index)

    swept = []

    def fake_sweep(tasks, root, **kwargs):
        swept.extend(t.run_id for t in tasks)
        return SweepSummary(total=len(tasks), in_shard=len(tasks))

    monkeypatch.setattr(pipeline, "run_sweep", fake_sweep)
    monkeypatch.setattr(pipeline, "is_done", lambda root, spec: False)
    out = tmp_path / "out"
    pipeline.reproduce(scale_name, out=out, data_dir=scale.data_dir, shard="0/2")
    assert swept == ids


def test_plan_json_from_the_cli(capsys):
    assert main(["reproduce", "--plan", "--json", "--scale", "quick"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_runs"] == len(data["runs"]) == len(plan(base.names(), QUICK))
    run = next(r for r in data["runs"] if r["run_id"].startswith("cnn1d_bn-gelu-gradient"))
    assert run["recipe"] == "configs/mnist1d_cnn_bn.py:scale=quick"
    assert run["overrides"]["activation"] == "gelu" and run["seeds"] == [run["seeds"][0]]
    assert run["experiments"][0] == "fig2" and run["cost_s"] > 0


def test_recipes_come_from_configs_only():
    source = "".join((SRC / f).read_text() for f in ("recipes.py", "fig2_penalty.py"))
    assert '"_recipe"' not in source
    assert "learning_rate=" not in source  # no recipe values outside configs/
