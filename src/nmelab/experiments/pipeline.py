"""``reproduce``: run whatever is missing, then write the figures and the report (with progress).

This is what ``nmelab reproduce`` calls; it can be used from Python too::

    from nmelab.experiments import reproduce

    if __name__ == "__main__":  # required: workers are spawned and re-import the main module
        reproduce(scale="quick", out="repro_quick", workers=2)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nmelab.experiments import base
from nmelab.experiments.planning import PlannedRun, plan
from nmelab.experiments.report import INVOCATIONS_FILE
from nmelab.experiments.results import load_results
from nmelab.experiments.sweep import (
    RunSpec,
    SweepSummary,
    is_done,
    parse_shard,
    run_sweep,
    shard_runs,
)

__all__ = ["check_data", "reproduce"]


def check_data(runs: Sequence[PlannedRun]) -> list[str]:
    """The data folders the runs need that do not exist (checked before any work starts)."""
    needed = {
        str(r.spec.config["data_dir"])
        for r in runs
        if r.spec.config.get("dataset") in ("cifar10", "imagenet") and r.spec.config.get("data_dir")
    }
    return sorted(d for d in needed if not Path(d).is_dir())


def _summary_text(summary: dict[str, Any]) -> str:
    """One line for a finished task: accuracy over seeds and outcomes, or the computation's kind."""
    statuses = summary.get("status")
    if not isinstance(statuses, list):
        return summary.get("experiment", "computed")
    accs = [a for a in summary.get("test_accuracy", []) if a is not None]
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    outcome = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if not accs:
        return f"no finite accuracy ({outcome})"
    mean = 100 * sum(accs) / len(accs)
    if len(statuses) == 1:
        return f"test {mean:.1f} % ({statuses[0]})"
    lo, hi = 100 * min(accs), 100 * max(accs)
    return f"test {mean:.1f} % (seeds {lo:.1f}–{hi:.1f}; {outcome})"


def reproduce(
    scale: str = "quick",
    experiments: Sequence[str] | None = None,
    out: str | Path = "reproduce",
    *,
    workers: int = 2,
    shard: str | tuple[int, int] | None = None,
    data_dir: str | None = None,
    num_seeds: int | None = None,
    threads: int | None = 1,
    report_only: bool = False,
    console: Any = None,
) -> dict[str, Any]:
    """Run the missing tasks of ``experiments`` at ``scale`` under ``out``; write the report.

    Args:
      scale: ``"quick"``, ``"small"`` or ``"paper"``.
      experiments: names (default: every registered experiment).
      out: the output folder (the sweep root): ``runs/``, ``figures/``, ``report.md``,
        ``report.html``, ``claims.json``.
      workers: parallel worker processes (1: run in this process).
      shard: ``"i/n"`` or ``(i, n)``: run only shard ``i`` of ``n``; the report is written only
        once every task of the sweep has a result.
      data_dir: folder with ``cifar10/`` and ``imagenet/`` (``paper`` scale).
      num_seeds: override the scale's seed count (>= 2).
      threads: XLA threads per worker process (``None``: XLA's default).
      report_only: do not train; build the report from what is stored.
      console: a ``rich.console.Console`` (default: a new one).

    Returns:
      ``{"sweep": SweepSummary | None, "report": {"md", "html", "json"} | None,
      "claims": [Claim], "wall_s": float}``.

    Raises:
      ValueError: an unknown experiment or scale, a bad shard, or a data folder the runs need
        that does not exist (checked before anything is written).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = console or Console()
    start = time.perf_counter()
    names = base.select(experiments)
    the_scale = base.get_scale(scale, data_dir, num_seeds)
    shard_pair = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    runs = plan(names, the_scale)
    missing_data = check_data(runs)
    if missing_data and not report_only:
        raise ValueError(f"data_dir: no such folder {missing_data[0]} (the runs need it)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tags = {r.spec.digest: r.experiments for r in runs}
    task_list = [r.spec for r in runs]
    console.rule(
        f"[bold]nmelab reproduce[/] · scale [cyan]{the_scale.name}[/] · "
        f"{the_scale.num_seeds} seeds · {len(task_list)} tasks · out {out}"
    )
    sweep: SweepSummary | None = None
    if not report_only:
        mine = shard_runs(task_list, *(shard_pair or (0, 1)))
        todo_cost = sum(s.cost for s in mine if not is_done(out, s))
        if shard_pair:
            console.print(
                f"shard {shard_pair[0]}/{shard_pair[1]}: {len(mine)} of {len(task_list)} tasks"
            )
        console.print(
            f"rough compute estimate for the missing tasks: {todo_cost / 60:.1f} min "
            f"(÷ up to {workers} workers)"
        )
        with Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            bar = progress.add_task("tasks", total=len(mine))
            running: dict[str, float] = {}

            def on_event(kind: str, spec: RunSpec, info: dict[str, Any]) -> None:
                where = ",".join(tags.get(spec.digest, []))
                if kind == "skip":
                    progress.advance(bar)
                elif kind == "start":
                    running[spec.run_id] = time.perf_counter()
                    progress.update(bar, description=f"running {len(running)}: {spec.name}")
                elif kind == "done":
                    running.pop(spec.run_id, None)
                    progress.advance(bar)
                    progress.console.print(
                        f"[green]✓[/] {spec.name} [dim]({where})[/] "
                        f"{_summary_text(info['summary'])} · {info['elapsed_s']:.1f} s"
                    )
                elif kind == "fail":
                    running.pop(spec.run_id, None)
                    progress.advance(bar)
                    progress.console.print(
                        f"[red]✗ {spec.name}[/] [dim]({where})[/] failed: {info['error']}"
                    )
                if running:
                    latest = list(running)[-1].rsplit("-", 1)[0]
                    progress.update(bar, description=f"running {len(running)} · {latest}")
                else:
                    progress.update(bar, description="tasks")

            sweep = run_sweep(
                task_list,
                out,
                workers=workers,
                shard=shard_pair,
                threads=threads,
                cache_dir=out / ".jax_cache",
                on_event=on_event,
            )
        console.print(
            f"sweep: {sweep.completed} run now, {sweep.already_done} already done, "
            f"{len(sweep.failed)} failed, {sweep.elapsed_s / 60:.1f} min"
        )
        for run_id, error in sweep.failed.items():
            console.print(f"[red]failed[/] {run_id}: {error} (see {out}/runs/{run_id}/error.json)")
    missing = [s for s in task_list if not is_done(out, s)]
    if shard_pair and missing:
        console.print(
            f"{len(missing)} task(s) of the whole sweep are not done yet (other shards?); the "
            f"report is written once all are: rerun without --shard, or with --report-only."
        )
        return {"sweep": sweep, "report": None, "claims": [], "wall_s": time.perf_counter() - start}
    from nmelab.experiments.report import build_report, write_report

    if sweep is not None and (sweep.completed or sweep.failed):
        _log_invocation(out, the_scale.name, names, workers, sweep, start)

    with console.status("building figures and the report"):
        results = load_results(out)
        report = build_report(
            out,
            names,
            the_scale,
            results,
            sweep_info={
                "wall_s": time.perf_counter() - start,
                "workers": workers,
                "failed": sweep.failed if sweep else {},
            },
        )
        paths = write_report(report, out)
    _print_verdicts(console, report.claims)
    console.print(f"report: {paths['html']} · {paths['md']}")
    return {
        "sweep": sweep,
        "report": paths,
        "claims": report.claims,
        "wall_s": time.perf_counter() - start,
    }


def _log_invocation(
    out: Path, scale: str, names: Sequence[str], workers: int, sweep: SweepSummary, start: float
) -> None:
    """Append one line per training invocation: when, how long, what ran (shown in the report).

    A log only: results never depend on it, and a killed invocation simply leaves no line.
    """
    import datetime as dt
    import os
    import platform
    import shlex
    import sys

    from nmelab import __version__
    from nmelab.train.metrics_io import append_jsonl

    record = {
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "scale": scale,
        "experiments": list(names),
        "workers": workers,
        "completed": sweep.completed,
        "already_done": sweep.already_done,
        "failed": len(sweep.failed),
        "sweep_s": sweep.elapsed_s,
        "wall_s": time.perf_counter() - start,
        "host": platform.node(),
        "machine": f"{platform.machine()}, {cpu_model()}",
        "cpus": os.cpu_count(),
        "command": "nmelab " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "nmelab_version": __version__,
        "commit": source_commit(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    append_jsonl(out / INVOCATIONS_FILE, record)


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; else what :mod:`platform` knows)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def source_commit() -> str | None:
    """The git commit of the nmelab source that runs (``+dirty`` if edited), or ``None``.

    ``None`` when nmelab is not installed from a git checkout (e.g. from a wheel).
    """
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty.strip() else "")


def _print_verdicts(console: Any, claims: Sequence[Any]) -> None:
    from rich.table import Table

    from nmelab.experiments.report import effect_text
    from nmelab.experiments.report_blocks import VERDICT_COLORS

    table = Table(title="claims", show_lines=False)
    for column in ("claim", "group", "effect [95 % CI]", "failed seeds", "verdict", "after Holm"):
        table.add_column(column)
    for c in claims:
        color = VERDICT_COLORS.get(c.verdict, "white")
        failed = f"{c.measured.num_diverged}d/{c.measured.num_collapsed}c"
        if c.failures_drive_result:
            failed += " (drive it)"
        table.add_row(c.key, c.group, effect_text(c), failed, f"[{color}]{c.verdict}[/]",
                      c.holm_verdict)  # fmt: skip
    console.print(table)
