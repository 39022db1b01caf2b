"""``nmelab reproduce``: every figure of the paper from one command, with a report of verdicts."""

from __future__ import annotations

import argparse
from pathlib import Path

from nmelab.cli.errors import UsageError, check_output_dir, check_output_file


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``reproduce`` sub-command to ``subparsers``."""
    parser = subparsers.add_parser(
        "reproduce",
        help="run the paper's experiments (skipping finished runs) and write report.md/.html",
        description=(
            "Run every experiment of the paper at a scale, skipping tasks that already have a "
            "result, then write OUT/report.md, OUT/report.html (self-contained) and "
            "OUT/claims.json with each claim's measured effect, 95 % CI and verdict. "
            "Killing it and rerunning loses nothing."
        ),
        epilog=(
            "scales: quick = MNIST-1D on a CPU, 3 seeds (minutes on 2 cores, see README); small = 5 "
            "seeds, extended grids, residual CNN (under 2 h with 2 workers on a 2-core CPU; "
            "published in docs/results/small); paper = "
            "CIFAR-10 WRN-28-10 and ImageNet ResNet-50 (needs --data-dir; GPU cluster, use "
            "--shard). --plan lists every run of a scale (experiments, overrides, seeds, cost) "
            "without running anything. --compare docs/results/small OUT sets a new run's "
            "verdicts beside the published ones."
        ),
    )
    parser.add_argument(
        "--scale",
        choices=("quick", "small", "paper"),
        default="quick",
        help="scale of the runs (default: quick)",
    )
    parser.add_argument(
        "--experiments",
        nargs="+",
        metavar="NAME",
        default=None,
        help="experiments to run and report (default: all; --plan shows them)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: reproduce_<scale>)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="parallel worker processes (default: 2; 1 runs in this process)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="T",
        help="XLA threads per worker process (default: 1; 0 = XLA's default; >= 0)",
    )
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run only shard I of N (0 <= I < N) for cluster job arrays",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="folder with cifar10/ and imagenet/ (paper scale)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="S",
        help="seeds per grid point (default: 3 quick, 5 small/paper; >= 2)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="do not train: build the report from the stored results",
    )
    parser.add_argument(
        "--export-csv",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write every stored run (one row per seed) as CSV",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print the runs the scale would perform (experiments, config overrides, seeds, "
        "compute estimate); run nothing",
    )
    parser.add_argument("--json", action="store_true", help="with --plan: print it as JSON")
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        metavar="DIR",
        help="after the report, copy report.md, its PNG figures, claims.json and results.csv "
        "to DIR (e.g. docs/results/small); no run folders",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        default=None,
        metavar=("PUBLISHED", "RUN"),
        help="print each claim's verdict in PUBLISHED (e.g. docs/results/small) beside the one "
        "in the finished run folder RUN; run nothing",
    )
    parser.set_defaults(run_fn=run)


def run(args: argparse.Namespace) -> int:
    """Run the reproduction; return the exit code (1 if any task failed).

    Raises:
      UsageError: a bad flag or path, checked before any work starts.
    """
    import nmelab.experiments as experiments
    from nmelab.experiments.pipeline import check_data
    from nmelab.experiments.planning import plan, plan_json, plan_text
    from nmelab.experiments.sweep import parse_shard

    if args.compare:
        return _compare(*args.compare)
    out = args.out or Path(f"reproduce_{args.scale}")
    if args.experiments:
        unknown = [n for n in args.experiments if n not in experiments.names()]
        if unknown:
            raise UsageError(
                f"--experiments: unknown {', '.join(unknown)}; choices: "
                f"{', '.join(experiments.names())}"
            )
    if args.workers < 1:
        raise UsageError(f"--workers: expected an integer >= 1, got {args.workers}")
    if args.threads < 0:
        raise UsageError(
            f"--threads: expected an integer >= 0 (0: XLA's default), got {args.threads}"
        )
    if args.json and not args.plan:
        raise UsageError("--json: only with --plan")
    try:
        parse_shard(args.shard)
    except ValueError as err:
        raise UsageError(f"--shard: {err}") from None
    data_dir = args.data_dir or ("DATA_DIR" if args.plan else None)  # a plan runs nothing
    try:
        scale = experiments.get_scale(args.scale, data_dir, args.seeds)
    except ValueError as err:
        flag = "--data-dir" if "data_dir" in str(err) else "--seeds"
        raise UsageError(f"{flag}: {err}") from None
    runs = plan(experiments.names() if not args.experiments else args.experiments, scale)
    if args.plan:
        if args.json:
            print(plan_json(runs, scale))
        else:
            print(plan_text(runs, scale))
        return 0
    missing = check_data(runs)
    if missing and not args.report_only:
        raise UsageError(
            f"--data-dir {args.data_dir}: no such folder {missing[0]} (the runs need it)"
        )
    check_output_dir(out, arg="--out")
    if args.export_csv is not None:
        check_output_file(args.export_csv, arg="--export-csv")
    if args.publish is not None:
        check_output_dir(args.publish, arg="--publish")
        if args.publish.resolve() == out.resolve():
            raise UsageError(f"--publish: expected a folder other than --out, got {args.publish}")
    result = experiments.reproduce(
        scale=args.scale,
        experiments=args.experiments,
        out=out,
        workers=args.workers,
        shard=args.shard,
        data_dir=args.data_dir,
        num_seeds=args.seeds,
        threads=args.threads or None,
        report_only=args.report_only,
    )
    if args.export_csv is not None:
        from nmelab.experiments.results import write_results_csv

        print(f"wrote {write_results_csv(out, args.export_csv)} rows to {args.export_csv}")
    if args.publish is not None and result["report"] is not None:
        written = experiments.publish(out, args.publish)
        print(f"published {len(written)} files to {args.publish}")
    sweep = result["sweep"]
    return 1 if sweep is not None and sweep.failed else 0


def _compare(published: Path, run: Path) -> int:
    """Print the published and the new verdict of every claim; exit 0 (2 on a bad folder)."""
    from rich.console import Console
    from rich.table import Table

    from nmelab.experiments import compare_claims

    try:
        rows = compare_claims(published, run)
    except ValueError as err:
        raise UsageError(f"--compare {err}") from None
    table = Table(title=f"verdicts: {published} (published) vs {run} (new)")
    for column in ("claim", "group", "published", "effect [95 % CI]", "new", "effect [95 % CI]",
                   ""):  # fmt: skip
        table.add_column(column)
    for r in rows:
        mark = "[bold yellow]changed[/]" if r.changed else ""
        table.add_row(r.key, r.group, r.published, r.published_effect, r.new, r.new_effect, mark)
    console = Console()
    console.print(table)
    changed = sum(r.changed for r in rows)
    console.print(f"{changed} of {len(rows)} verdicts changed")
    return 0
