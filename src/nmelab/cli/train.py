"""``nmelab train``: train one config in one workdir (resumes from the workdir's checkpoint)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nmelab.cli.errors import UsageError, check_output_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command to ``subparsers``."""
    parser = subparsers.add_parser(
        "train",
        help="train a config (configs/*.py) with checkpoints, resume and curvature tracking",
        description=(
            "Train the config returned by get_config() of a Python config file. The workdir gets "
            "config.json, metrics.jsonl, curvature.jsonl (when tracking), checkpoints/ and, at the "
            "end, summary.json. Rerunning the command resumes from the latest checkpoint; a "
            "finished run (summary.json present) is not retrained."
        ),
        epilog=(
            "example: nmelab train --config configs/digits_mlp.py --workdir runs/digits "
            "--set regularizer=sam --set regularizer_params.rho=0.1 --set num_seeds=3"
        ),
    )
    parser.add_argument(
        "--config", type=Path, required=True, metavar="FILE", help="config file (configs/*.py)"
    )
    parser.add_argument(
        "--workdir", type=Path, required=True, metavar="DIR", help="output folder of the run"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "override a config key (repeatable); VALUE is read as a Python literal when it parses "
            "as one (0.1, True, (32, 32, 3), {'rho': 0.1}), else as a string; nested keys are "
            "dotted (curvature.every_steps=50)"
        ),
    )
    parser.set_defaults(run_fn=run)


def _check_workdir(workdir: Path) -> None:
    """Refuse, before any work, a workdir that cannot be written or holds unreadable records."""
    from nmelab._io import read_json

    check_output_dir(workdir, arg="--workdir")
    for name in ("summary.json", "config.json"):
        if (workdir / name).exists():
            try:
                read_json(workdir / name)
            except ValueError as err:
                raise UsageError(
                    f"--workdir: {err}; move the workdir aside or use a new one"
                ) from None


def run(args: argparse.Namespace) -> int:
    """Train; return the exit code (0 also when seeds diverged: that is a recorded outcome).

    Raises:
      UsageError: a config that does not load, a bad ``--set``, a workdir that cannot be written
        or holds unreadable records, or a config the trainer refuses (one line, exit 2).
    """
    from nmelab.train import apply_overrides, load_config, train_and_evaluate

    try:
        config = apply_overrides(load_config(args.config), args.overrides)
    except (FileNotFoundError, KeyError, TypeError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise UsageError(str(message)) from None
    _check_workdir(args.workdir)
    try:
        summary = train_and_evaluate(config, args.workdir)
    except (OSError, ValueError) as err:  # bad config values, missing or unreadable data
        raise UsageError(str(err)) from None
    except KeyboardInterrupt:
        print(
            f"interrupted; rerun the same command to resume from the last checkpoint in "
            f"{args.workdir / 'checkpoints'}",
            file=sys.stderr,
        )
        return 130
    for i, seed in enumerate(summary["seeds"]):
        status = summary["status"][i]
        if status == "diverged":
            detail = f"diverged at step {summary['diverged_step'][i]}"
        else:
            detail = (
                f"test accuracy {summary['test_accuracy'][i]:.4f}, "
                f"test loss {summary['test_loss'][i]:.4f}"
            )
        print(f"seed {seed}: {status}: {detail}")
    print(
        f"wrote {args.workdir / 'summary.json'} ({summary['steps']} steps, "
        f"{summary['wall_time_s']:.1f} s)"
    )
    return 0
