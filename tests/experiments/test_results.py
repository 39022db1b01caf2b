"""load_results: one row per seed, diverged seeds scored at chance, torn files ignored."""

import json
import math

import pandas as pd
import pytest

from nmelab._io import write_json_atomic
from nmelab.experiments import load_results
from nmelab.experiments.recipes import TRAIN_RUNNER
from nmelab.experiments.results import describe
from nmelab.experiments.sweep import RESULT_FILE, RunSpec, run_dir


def _write(root, spec, summary):
    write_json_atomic(
        run_dir(root, spec) / RESULT_FILE, {**spec.to_json(), "summary": summary, "elapsed_s": 1.5}
    )


def _config(**kw):
    base = {
        "model": "mlp",
        "dataset": "mnist1d",
        "activation": "beta_gelu",
        "activation_params": {"beta": 3.0},
        "regularizer": "weight_noise",
        "regularizer_params": {"sigma": 0.1},
        "learning_rate": 0.2,
        "num_epochs": 60.0,
        "num_seeds": 3,
        "curvature": {"every_steps": 0},
    }
    return {**base, **kw}


SUMMARY = {
    "seeds": [0, 1, 2],
    "status": ["ok", "collapsed", "diverged"],
    "diverged_step": [None, None, 12],
    "test_accuracy": [0.71, 0.1, None],
    "test_loss": [1.2, 2.3, None],
    "train_accuracy": [1.0, 0.1, None],
    "train_loss": [0.0, 2.3, None],
    "num_classes": 10,
}


def test_rows_per_seed_with_scores_and_coordinates(tmp_path):
    spec = RunSpec(TRAIN_RUNNER, _config(), "a")
    _write(tmp_path, spec, SUMMARY)
    frame = load_results(tmp_path)
    assert len(frame) == 3
    assert list(frame["seed"]) == [0, 1, 2]
    assert list(frame["status"]) == ["ok", "collapsed", "diverged"]
    assert frame["accuracy"].iloc[0] == pytest.approx(71.0)
    assert math.isnan(frame["accuracy"].iloc[2])
    assert list(frame["score"]) == pytest.approx([71.0, 10.0, 10.0])
    row = frame.iloc[0]
    assert (row["method"], row["activation"], row["beta"]) == ("weight_noise", "beta_gelu", 3.0)
    assert row["sigma2"] == pytest.approx(0.01) and row["rho"] == 0.0
    assert row["config.activation_params.beta"] == 3.0
    assert row["config.curvature.every_steps"] == 0
    assert (frame["run_id"] == spec.run_id).all()


def test_computation_results_give_one_row_and_torn_files_are_ignored(tmp_path):
    fig1 = RunSpec("nmelab.experiments.fig1_landscape:run", {"resolution": 3}, "fig1")
    _write(tmp_path, fig1, {"experiment": "fig1", "activations": []})
    torn = RunSpec(TRAIN_RUNNER, _config(seed=5), "torn")
    run_dir(tmp_path, torn).mkdir(parents=True)
    (run_dir(tmp_path, torn) / RESULT_FILE).write_text('{"summary": {"seeds": [0')
    with pytest.warns(UserWarning, match="damaged run record skipped"):
        frame = load_results(tmp_path)
    assert list(frame["run_id"]) == [fig1.run_id]
    assert frame["status"].iloc[0] == "ok"


def test_empty_and_missing_roots(tmp_path):
    frame = load_results(tmp_path)
    assert len(frame) == 0 and {"run_id", "seed", "score", "method"} <= set(frame.columns)
    with pytest.raises(FileNotFoundError, match="root"):
        load_results(tmp_path / "nope")


def test_describe_sgd_and_sigma():
    d = describe({"regularizer": "none", "activation": "relu", "regularizer_params": {}})
    assert d["method"] == "sgd" and math.isnan(d["beta"]) and d["sigma2"] == 0.0
    d = describe({"regularizer": "sam", "activation": "gelu", "regularizer_params": {"rho": 0.3}})
    assert d["rho"] == 0.3


def test_csv_export_round_trip(tmp_path):
    spec = RunSpec(TRAIN_RUNNER, _config(), "a")
    _write(tmp_path, spec, SUMMARY)
    frame = load_results(tmp_path)
    frame.to_csv(tmp_path / "r.csv", index=False)
    text = (tmp_path / "r.csv").read_text().splitlines()
    assert len(text) == 4 and "run_id" in text[0]
    json.dumps(frame.iloc[0].to_dict(), default=str)


def test_load_results_reads_its_own_csv_back(tmp_path):
    spec = RunSpec(TRAIN_RUNNER, _config(), "a")
    _write(tmp_path, spec, SUMMARY)
    frame = load_results(tmp_path)
    frame.to_csv(tmp_path / "r.csv", index=False)
    back = load_results(tmp_path / "r.csv")
    columns = ["run_id", "seed", "status", "accuracy", "score", "train_accuracy", "rho", "sigma2"]
    pd.testing.assert_frame_equal(
        back[columns], frame[columns], check_dtype=False, check_exact=False
    )
    assert list(back.columns) == list(frame.columns)


def test_load_results_rejects_a_csv_that_is_not_a_results_table(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="root: .*x.csv.* columns run_id, runner, seed"):
        load_results(tmp_path / "x.csv")
