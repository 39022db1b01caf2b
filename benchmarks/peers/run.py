"""One command: nmelab and its PyTorch peers (curvlinops, PyHessian) side by side, into docs.

    python benchmarks/peers/run.py [--venv PATH] [--repeats 5] [--rounds 1] [--threads N]

Creates (once) a virtual environment for the peers OUTSIDE the repository (default
``~/.cache/nmelab/peers-venv``), installs ``torch==2.13.0`` first (pip takes the CPU build where
one is on disk) and then the ``peers`` extra of ``pyproject.toml`` with ``--no-deps``:
backpack-for-pytorch, which curvlinops needs, declares torchvision, which neither peer imports and
which would pull in a CUDA torch; the extra therefore lists every package the peers do import.

It then runs ``nmelab_side.py`` in this interpreter and ``torch_side.py`` in the peers'
environment, alternately ``--rounds`` times, takes the median of each figure over the rounds, and
rewrites the part of ``--output`` between the ``peers:begin`` / ``peers:end`` markers with the two
tables: milliseconds and the ratio to each framework's own gradient, the machine, the versions,
the date, the peak load average and, when it exceeded the number of cores by more than one (the
benchmark's own threads account for about the core count), a "measured under load" note.
Benchmarks never run in CI and never assert a time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import workloads as wl  # noqa: E402

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
TORCH = "torch==2.13.0"


def peers_requirements() -> list[str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    return extras["peers"]


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    requirements = peers_requirements()
    check = "import torch, curvlinops, pyhessian"
    if subprocess.run([str(python), "-c", check], capture_output=True).returncode != 0:
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, TORCH], check=True)
        others = [r for r in requirements if not r.startswith("torch")]
        subprocess.run([*pip, "--no-deps", *others], check=True)
    return python


def run_side(python: str, script: str, repeats: int, threads: int | None) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT / "src")]))
    if threads is not None:  # both frameworks get the same number of compute threads
        env["OMP_NUM_THREADS"] = str(threads)
        env["NMELAB_BENCH_THREADS"] = str(threads)
        if threads == 1:
            flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
    out = subprocess.run(
        [python, str(HERE / script), str(repeats)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict], workload: str) -> dict[str, float]:
    keys = runs[0][workload].keys()
    return {k: statistics.median(r[workload][k] for r in runs) for k in keys}


def cell(ms: float | None, grad: float) -> str:
    if ms is None:
        return ""
    return f"{ms:,.0f} ms ({ms / grad:.1f})"


def table(workload: str, ours: dict[str, float], peers: dict[str, float]) -> list[str]:
    lines = [
        "| operation | nmelab | curvlinops | PyHessian |",
        "|---|---|---|---|",
    ]
    torch_grad = peers["gradient"]
    for key, label in wl.OPERATIONS:
        if key == "gradient":
            row = [cell(ours[key], ours[key]), cell(torch_grad, torch_grad) + " (torch)", ""]
        else:
            row = [
                cell(ours.get(key), ours["gradient"]),
                cell(peers.get(f"curvlinops/{key}"), torch_grad),
                cell(peers.get(f"pyhessian/{key}"), torch_grad),
            ]
        if any(row):
            lines.append(f"| {label} | " + " | ".join(row) + " |")
    if "lanczos_compile" in ours:
        lines.append(f"\nnmelab Lanczos compile time: {ours['lanczos_compile'] / 1e3:.1f} s.")
    del workload
    return lines


def machine() -> str:
    from nmelab.experiments.pipeline import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def render(ours_runs, peer_runs, loads, rounds, threads) -> str:
    cores = os.cpu_count() or 1
    peak = max(loads)
    lines = [
        BEGIN,
        "## nmelab and its PyTorch peers, side by side",
        "",
        f"Written by `python benchmarks/peers/run.py` on {datetime.date.today().isoformat()}.",
        f"Machine: {machine()}. Python {platform.python_version()}.",
        "Versions: "
        + ", ".join(
            f"{k} {v}" for side in (ours_runs[0], peer_runs[0]) for k, v in side["versions"].items()
        )
        + ".",
        f"Each figure is the median over {rounds} alternating rounds of each side's median "
        "time; in brackets the ratio to the same framework's own gradient (nmelab: `jax.grad`, "
        "peers: `torch.autograd.grad`). PyHessian's figures include building its gradient graph, "
        "except the row that reuses it. All products are float32. "
        + (
            f"Both frameworks ran with {threads} compute thread(s)."
            if threads
            else "Both frameworks used their default thread pools."
        )
        + f" Peak 1-minute load average: {peak:.1f} on {cores} cores.",
        "",
    ]
    # Each side's own threads keep the load average near the core count; more means other jobs.
    if peak > cores + 1:
        lines += [
            f"**Measured under load**: the load average reached {peak:.1f} on {cores} cores "
            "while these ran (other jobs shared the machine). Absolute times are inflated and "
            "noisy; the ratios, taken in one process each, are the figures to compare.",
            "",
        ]
    for workload, spec in (("mlp", wl.MLP), ("cnn", wl.CNN)):
        lines += [f"### {spec['name']}", ""]
        lines += table(workload, median_of(ours_runs, workload), median_of(peer_runs, workload))
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def write(output: Path, block: str) -> None:
    text = output.read_text() if output.exists() else "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + "\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    output.write_text(head + block + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=Path("~/.cache/nmelab/peers-venv"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="compute threads per side")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    python = str(ensure_venv(args.venv.expanduser()))
    ours, peers, loads = [], [], [os.getloadavg()[0]]
    for _ in range(args.rounds):
        ours.append(run_side(sys.executable, "nmelab_side.py", args.repeats, args.threads))
        loads.append(os.getloadavg()[0])
        peers.append(run_side(python, "torch_side.py", args.repeats, args.threads))
        loads.append(os.getloadavg()[0])
    block = render(ours, peers, loads, args.rounds, args.threads)
    write(args.output, block)
    print(block)


if __name__ == "__main__":
    main()
