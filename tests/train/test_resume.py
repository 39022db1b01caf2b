"""Killing and resuming a run equals the uninterrupted run, bitwise, on CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _train_helpers import assert_trees_equal, tiny_config

from nmelab.train import apply_overrides, load_config, restore_state, train_and_evaluate
from nmelab.train.metrics_io import read_jsonl

REPO = Path(__file__).resolve().parents[2]
VOLATILE = ("elapsed_s", "examples_per_sec", "wall_time_s", "timing")


def _stable(record):
    return {k: v for k, v in record.items() if k not in VOLATILE}


def _assert_same_run(config, a: Path, b: Path, logs=("metrics.jsonl",)):
    assert_trees_equal(restore_state(config, a), restore_state(config, b))
    for name in logs:
        records_a = [_stable(r) for r in read_jsonl(a / name)]
        records_b = [_stable(r) for r in read_jsonl(b / name)]
        assert records_a == records_b, name
    summary_a = json.loads((a / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    assert _stable(summary_a) == _stable(summary_b)


@pytest.mark.parametrize(
    "data",
    [
        {"num_seeds": 2},
        pytest.param({"num_seeds": 1, "data_on_device": False}, marks=pytest.mark.slow),
    ],
    ids=["device-data", "host-data"],
)
def test_stop_and_resume_equals_uninterrupted_bitwise(tmp_path, data):
    """BatchNorm, augmentation, a stochastic regularizer and vmapped seeds, killed mid-epoch."""
    config = tiny_config(
        **data,
        dataset_kwargs={"shape": (6, 6, 3), "num_train": 48, "num_test": 16},
        model="cnn_bn_tiny",
        augment=True,
        batch_size=8,
        num_epochs=2.0,  # 12 steps, 6 per epoch
        log_every_steps=5,
        checkpoint_every_steps=4,
        regularizer="weight_noise",
        regularizer_params={"sigma": 0.01},
    )
    train_and_evaluate(config, tmp_path / "straight")

    killed = config  # stopped by the test's callback after step 7, as if killed
    stop = {"stop_fn": lambda step: step >= 7}
    assert train_and_evaluate(killed, tmp_path / "killed", **stop) == {"stopped": True, "step": 7}
    assert not (tmp_path / "killed" / "summary.json").exists()
    # the records of steps 5-7 were logged after the step-4 checkpoint: they are redone
    assert [r["step"] for r in read_jsonl(tmp_path / "killed" / "metrics.jsonl")][-1] == 6
    summary = train_and_evaluate(config, tmp_path / "killed")
    assert summary["steps"] == 12
    _assert_same_run(config, tmp_path / "straight", tmp_path / "killed")


def test_resume_from_the_final_checkpoint_only_redoes_the_summary(tmp_path):
    config = tiny_config(num_epochs=1.0)
    first = train_and_evaluate(config, tmp_path)
    (tmp_path / "summary.json").unlink()  # killed after the last checkpoint, before the summary
    second = train_and_evaluate(config, tmp_path)
    assert _stable(second) == _stable(first)
    finals = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r.get("final")]
    assert len(finals) == 2  # test and train_eval, once each


def _wait_for_checkpoint(workdir: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        directory = workdir / "checkpoints"
        if directory.exists() and any(p.name.isdigit() for p in directory.iterdir()):
            return
        if process.poll() is not None:
            raise AssertionError(f"run ended before its first checkpoint: {process.returncode}")
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_sigkill_of_the_cli_then_rerun_equals_uninterrupted(tmp_path):
    """A real kill: SIGKILL the `nmelab train` process after its first checkpoint, then rerun."""
    config_path = REPO / "configs" / "digits_mlp.py"
    sets = [
        "num_epochs=30",
        "checkpoint_every_steps=33",
        "progress=False",
        "curvature.every_steps=50",
        "curvature.num_probes=4",
        "curvature.probe_batch_size=32",
        "curvature.lanczos_iters=5",
        "model_kwargs.features=(32,)",
    ]

    def command(workdir):
        args = [
            sys.executable,
            "-m",
            "nmelab",
            "train",
            "--config",
            str(config_path),
            "--workdir",
            str(workdir),
        ]
        for item in sets:
            args += ["--set", item]
        return args

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert subprocess.run(command(straight), env=env, capture_output=True).returncode == 0

    process = subprocess.Popen(
        command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for_checkpoint(killed, process, timeout=300)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "summary.json").exists()
    done = subprocess.run(command(killed), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    config = apply_overrides(load_config(config_path), [s for s in sets])
    _assert_same_run(config, straight, killed, logs=("metrics.jsonl", "curvature.jsonl"))
