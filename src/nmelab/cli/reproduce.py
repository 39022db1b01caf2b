"""``nmelab reproduce``: every figure of the paper from one command, with a report of verdicts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_EXPERIMENTS = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "b4", "mechanism")


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
            "scales: quick = MNIST-1D on a CPU, 3 seeds (about 15 min on 2 cores); small = 5 "
            "seeds, extended grids, residual CNN (several CPU hours, ~1 h on a GPU); paper = "
            "CIFAR-10 WRN-28-10 and ImageNet ResNet-50 (needs --data-dir; GPU cluster, use "
            "--shard). experiments: " + " ".join(_EXPERIMENTS)
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
        help="experiments to run and report (default: all): " + " ".join(_EXPERIMENTS),
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
        help="XLA threads per worker process (default: 1; 0 = XLA's default)",
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
        "--list",
        action="store_true",
        help="list the tasks of the sweep (and whether each is done), then exit",
    )
    parser.set_defaults(run_fn=run)


def _error(message: str) -> int:
    print(f"nmelab reproduce: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run the reproduction; return the exit code (1 if any task failed)."""
    from nmelab.experiments import load_results, reproduce
    from nmelab.experiments.registry import get_scale, points_for
    from nmelab.experiments.sweep import is_done, parse_shard

    out = args.out or Path(f"reproduce_{args.scale}")
    if args.experiments:
        unknown = [n for n in args.experiments if n not in _EXPERIMENTS]
        if unknown:
            return _error(
                f"--experiments: unknown {', '.join(unknown)}; choices: {', '.join(_EXPERIMENTS)}"
            )
    if args.workers < 1:
        return _error(f"--workers: expected an integer >= 1, got {args.workers}")
    try:
        parse_shard(args.shard)
        scale = get_scale(args.scale, args.data_dir, args.seeds)
    except ValueError as err:
        return _error(str(err))
    if args.list:
        seen = set()
        for name, pts in points_for(args.experiments or _EXPERIMENTS, scale).items():
            for spec in (s for p in pts for s in p.specs):
                if spec.run_id in seen:
                    continue
                seen.add(spec.run_id)
                mark = "done" if is_done(out, spec) else "todo"
                print(f"{mark}  {name:9s} {spec.run_id}")
        print(f"{len(seen)} tasks")
        return 0
    result = reproduce(
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
        frame = load_results(out)
        args.export_csv.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.export_csv, index=False)
        print(f"wrote {len(frame)} rows to {args.export_csv}")
    sweep = result["sweep"]
    return 1 if sweep is not None and sweep.failed else 0
