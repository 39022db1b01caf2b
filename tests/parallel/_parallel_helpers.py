"""Run a helper script of tests/parallel in a subprocess and read its JSON verdicts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKS = HERE / "_parallel_checks.py"

REGULARIZER_CONFIGS = (
    "none",
    "gradient_penalty_p1",
    "gradient_penalty_p2",
    "sam",
    "usam",
    "weight_noise",
    "hessian_trace",
    "nme_trace",
    "gn_trace",
    "gn_trace_per_example",
)
"""The labels of ``_parallel_checks.Checks.regularizer_list`` (every registered regularizer)."""

PER_SHARD_SLOW = ("hessian_trace", "nme_trace", "gn_trace_per_example")
"""The per-shard checks run only in the slow section (third derivatives, per-example vmaps)."""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child: CPU only, no inherited device-count or x64 settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def run_json(args: list[str], timeout: float = 900, **env: str) -> dict:
    """Run ``python *args``; fail with its stderr if it fails; return its last stdout line."""
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(**env),
        cwd=HERE,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited with {proc.returncode}\n--- stderr (tail) ---\n"
            f"{proc.stderr[-6000:]}\n--- stdout (tail) ---\n{proc.stdout[-2000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_checks(section: str, devices: int = 4) -> dict:
    """The results of one section of ``_parallel_checks.py`` on ``devices`` simulated devices."""
    results = run_json([str(CHECKS), section, "--devices", str(devices)])
    assert results["_meta"]["devices"] == devices
    return results


def assert_checks(results: dict, prefix: str, expected: set[str] | None = None) -> None:
    """Every check named ``prefix*`` passed, and (if given) the ``expected`` ones all ran."""
    selected = {k: v for k, v in results.items() if k.startswith(prefix)}
    assert selected, f"no check named {prefix}* ran"
    if expected is not None:
        missing = sorted(set(expected) - set(selected))
        assert not missing, f"checks did not run: {missing}"
    failures = {
        k: {f: v[f] for f in ("err", "tol", "expect") if f in v}
        | ({"message": v["message"]} if "message" in v else {})
        for k, v in selected.items()
        if not v["ok"]
    }
    assert not failures, f"failed checks: {json.dumps(failures, indent=1)}"


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]
