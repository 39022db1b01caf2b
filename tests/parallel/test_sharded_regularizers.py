"""Every regularizer's step with the batch sharded over 4 simulated devices equals one device.

One subprocess (``_parallel_checks.py regularizers``) runs ``jit(reg.value_and_grad)`` for every
registered regularizer (and both gn_trace forms, both gradient-penalty exponents) on one device
and on the sharded batch, plus FSDP-sharded params and a train-mode BatchNorm model (whose
updated statistics must be the global ones).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from _parallel_helpers import HERE, assert_checks, clean_env, run_checks
from _parallel_helpers import REGULARIZER_CONFIGS as CONFIGS

import nmelab.regularizers as regs


@pytest.fixture(scope="module")
def results():
    return run_checks("regularizers")


def test_every_registered_regularizer_is_checked(results):
    # the script compares its list with nmelab.regularizers.NAMES: a new regularizer fails here
    assert_checks(results, "reg/all_covered")
    assert len(regs.NAMES) >= 8


def test_every_regularizer_step_matches_single_device(results):
    global_ = {f"reg/{c}" for c in CONFIGS if c != "gn_trace_per_example"}
    assert_checks(results, "reg/", global_ | {"reg/sam/fsdp"})


def test_batchnorm_regularizer_step_matches_single_device(results):
    assert_checks(results, "reg_bn/", {"reg_bn/sam"})


@pytest.mark.slow
def test_more_forms_fsdp_and_batchnorm_regularizer_steps():
    results = run_checks("regularizers_slow")
    assert_checks(
        results,
        "reg/",
        {
            "reg/gn_trace_per_example",
            "reg/gradient_penalty_p1/fsdp",
            "reg/hessian_trace/fsdp",
            "reg/gn_trace/fsdp",
        },
    )
    assert_checks(
        results,
        "reg_bn/",
        {
            "reg_bn/gradient_penalty_p1",
            "reg_bn/weight_noise",
            "reg_bn/hessian_trace",
            "reg_bn/gn_trace",
        },
    )


# ------------------------------------------------------------------------------------------------
# the benchmark scripts run (their numbers are for reading, not for asserting)

BENCHMARKS = HERE.parents[1] / "benchmarks"


@pytest.mark.slow
def test_gpu_wrn_benchmark_smoke_runs_on_cpu(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "gpu_wrn_steps.py"),
            "--smoke",
            "--regularizers",
            "none",
            "sam",
            "gn_trace",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=clean_env(OUT=str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_wrn_steps.json").read_text())
    assert [e["regularizer"] for e in report["entries"]] == ["none", "sam", "gn_trace"]
    assert all(e["finite"] and e["ms_per_step"] > 0 for e in report["entries"])
    assert "x SGD" in proc.stdout


@pytest.mark.slow
def test_scaling_benchmark_runs_and_agrees_across_device_counts():
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench_scaling.py"),
            "--devices",
            "1",
            "2",
            "--repeats",
            "1",
            "--batch",
            "64",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "share the same" in result["caveat"]
    one, two = result["runs"]
    for name, values in one["outputs"].items():
        np.testing.assert_allclose(two["outputs"][name], values, rtol=1e-5)
