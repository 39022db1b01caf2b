"""``nmelab analyze``: argument errors, and --workdir on a stand-in for nmelab.train.load_trained.

The stand-in (monkeypatched) returns a tiny MLP on digits, so these tests exercise only the command;
``test_analyze_workdir.py`` runs it on a real ``nmelab train`` run.
"""

import dataclasses
import json

import analysis_cases as cases
import ml_collections
import pytest

import nmelab.train
from nmelab import data
from nmelab.cli import build_parser, main

# the settings of analysis_cases.result(), so the command's analysis reuses its compilation
ARGS = ["--num-probes", str(cases.NUM_PROBES), "--num-iters", str(cases.num_params())]
ARGS += ["--batch-size", "6", "--seed", str(cases.SEED)]


@dataclasses.dataclass(frozen=True)
class FakeRun:
    config: ml_collections.ConfigDict
    step: int
    objective: object
    params: object
    dataset: object


@pytest.fixture(scope="module")
def fake_run():
    """The cached toy problem as a restored run; its batch is the whole training set."""
    config = ml_collections.ConfigDict({"model": "mlp", "dataset": "toy", "activation": "gelu"})
    objective, params, (x, y) = cases.problem()
    dataset = data.Dataset(x, y, x[:2], y[:2], 3, "toy")
    return FakeRun(config, 7, objective, params, dataset)


@pytest.fixture
def calls(monkeypatch, fake_run):
    seen = []

    def load_trained(workdir, *, step=None, seed=0):
        seen.append((workdir, step, seed))
        return fake_run

    monkeypatch.setattr(nmelab.train, "load_trained", load_trained, raising=False)
    return seen


def test_analyze_is_registered_with_its_options():
    args = build_parser().parse_args(["analyze", "--workdir", "runs/a", "--step", "5"])
    assert args.command == "analyze" and str(args.workdir) == "runs/a" and args.step == 5
    args = build_parser().parse_args(["analyze"])
    assert args.workdir is None and args.out is None and args.num_probes == 30


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--activation", "swish"], "--activation must be one of"),
        (["--betas", "1", "-3"], "--beta and --betas must be > 0"),
        (["--epochs", "0"], "--epochs must be > 0"),
        (["--step", "3"], "--step and --seed-index need --workdir"),
        (["--workdir", "{tmp}/missing"], "missing: no such folder"),
        (["--workdir", "{tmp}", "--epochs", "3"], "--epochs: only for the demo model"),
        (["--workdir", "{tmp}", "--out", "{tmp}/file"], "file: exists and is not a folder"),
        (["--out", "{tmp}/file"], "file: exists and is not a folder"),
    ],
)
def test_analyze_rejects_bad_arguments_before_any_work(argv, needle, tmp_path, capsys, calls):
    (tmp_path / "file").write_text("")
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(["analyze", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nmelab analyze: error: ") and needle.format(tmp=tmp_path) in err
    assert calls == []  # nothing was restored or trained


def test_analyze_rejects_counts_below_their_minimum():
    for argv in (["--num-probes", "1"], ["--num-iters", "1"], ["--step", "-1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["analyze", *argv])


def test_a_checkpoint_error_is_a_usage_error_naming_the_path(tmp_path, capsys, monkeypatch):
    def load_trained(workdir, *, step=None, seed=0):
        raise ValueError(f"{workdir}/checkpoints/9: no such checkpoint")

    monkeypatch.setattr(nmelab.train, "load_trained", load_trained, raising=False)
    assert main(["analyze", "--workdir", str(tmp_path), "--step", "9"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path}/checkpoints/9: no such checkpoint" in err and "Traceback" not in err


def test_workdir_table_equals_analysis_analyze_on_the_same_inputs(tmp_path, capsys, calls):
    out = tmp_path / "out"
    argv = ["analyze", "--workdir", str(tmp_path), "--step", "7", "--seed-index", "1", *ARGS]
    assert main([*argv, "--out", str(out)]) == 0
    assert calls == [(tmp_path, 7, 1)]
    record = json.loads((out / "analysis.json").read_text())
    assert record["run"]["step"] == 7 and record["batch"]["first_examples"] == 6
    expected = cases.result()  # analyze(*problem, key=jax.random.key(--seed), ...)
    assert record["analysis"] == json.loads(json.dumps(expected.to_dict()))
    assert expected.table() in capsys.readouterr().out
    for name in ("spectral_density.png", "nme_diagonal.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "nme_diagonal_vs_beta.png").exists()  # the β sweep is the demo's


def test_workdir_output_defaults_to_run_analysis(tmp_path, calls):
    assert main(["analyze", "--workdir", str(tmp_path), *ARGS]) == 0
    assert (tmp_path / "analysis" / "analysis.json").is_file()
