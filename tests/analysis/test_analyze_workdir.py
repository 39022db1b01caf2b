"""``nmelab analyze --workdir`` on a run trained by ``nmelab train``, and the demo (slow).

These need :func:`nmelab.train.load_trained` (the trainer's restore API).
"""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from nmelab import analysis, train
from nmelab.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits_mlp.py"
TRAIN_SETTINGS = [
    "model_kwargs.features=(8,)",
    "num_epochs=1",
    "eval_every_epochs=0",
    "checkpoint_every_steps=5",
    "max_checkpoints=5",
    "progress=False",
]
ANALYZE_SETTINGS = ["--num-probes", "4", "--num-iters", "6", "--batch-size", "32", "--seed", "2"]


def _assert_close(found, expected, path="analysis"):
    """Equal structure; numbers equal to 1e-12 relative (one computation, run twice)."""
    if isinstance(expected, dict):
        assert found.keys() == expected.keys(), path
        for key in expected:
            _assert_close(found[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(found) == len(expected), path
        for i, (a, b) in enumerate(zip(found, expected, strict=True)):
            _assert_close(a, b, f"{path}[{i}]")
    elif isinstance(expected, float) and not isinstance(found, bool):
        assert math.isclose(found, expected, rel_tol=1e-12, abs_tol=1e-15), path
    else:
        assert found == expected, path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("digits_run")
    argv = ["train", "--config", str(CONFIG), "--workdir", str(workdir)]
    for setting in TRAIN_SETTINGS:
        argv += ["--set", setting]
    assert main(argv) == 0
    return workdir


def _expected(workdir, step):
    trained = train.load_trained(workdir, step=step)
    params = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), trained.params)
    x, y = trained.dataset.x_train[:32], trained.dataset.y_train[:32]
    batch = (jnp.asarray(x, jnp.float64), jnp.asarray(y))
    result = analysis.analyze(
        trained.objective, params, batch, key=jax.random.key(2), num_probes=4, num_iters=6
    )
    return trained.step, json.loads(json.dumps(result.to_dict()))


@pytest.mark.slow
@pytest.mark.parametrize("step", [None, 5])
def test_workdir_table_equals_analyze_on_the_same_checkpoint(run_dir, step, tmp_path):
    out = tmp_path / "analysis"
    argv = ["analyze", "--workdir", str(run_dir), "--out", str(out), *ANALYZE_SETTINGS]
    assert main(argv + ([] if step is None else ["--step", str(step)])) == 0
    record = json.loads((out / "analysis.json").read_text())
    expected_step, expected = _expected(run_dir, step)
    assert record["run"]["step"] == expected_step == (11 if step is None else 5)
    _assert_close(record["analysis"], expected)
    for name in ("spectral_density.png", "nme_diagonal.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_missing_or_corrupted_checkpoint_is_a_clear_error_naming_the_path(
    run_dir, tmp_path, capsys
):
    assert main(["analyze", "--workdir", str(run_dir), "--step", "999"]) == 2
    err = capsys.readouterr().err
    assert str(run_dir) in err and "999" in err and "Traceback" not in err

    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "config.json").write_text((run_dir / "config.json").read_text())
    assert main(["analyze", "--workdir", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nmelab analyze: error: ") and str(missing) in err

    corrupted = tmp_path / "corrupted"
    (corrupted / "checkpoints").mkdir(parents=True)
    (corrupted / "config.json").write_text((run_dir / "config.json").read_text())
    for source in (run_dir / "checkpoints").rglob("*"):
        target = corrupted / source.relative_to(run_dir)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.write_bytes(b"not a checkpoint")
    assert main(["analyze", "--workdir", str(corrupted)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nmelab analyze: error: ") and str(corrupted) in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_demo_trains_through_train_and_evaluate_and_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["analyze", "--epochs", "1", "--betas", "1", "30", "--out", str(out)]
    assert main([*argv, *ANALYZE_SETTINGS]) == 0
    text = capsys.readouterr().out
    assert "H = GN + NME" in text and "β = 30" in text
    record = json.loads((out / "analysis.json").read_text())
    assert [row["beta"] for row in record["beta_sweep"]] == [1.0, 30.0]
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["beta_gelu_beta30", "gelu"]
    for name in ("spectral_density.png", "nme_diagonal.png", "nme_diagonal_vs_beta.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the demo's runs are ordinary nmelab train workdirs
    again = tmp_path / "again"
    assert main(["analyze", "--workdir", str(out / "runs" / "gelu"), "--out", str(again)]) == 0
