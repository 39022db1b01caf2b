"""The ``nmelab`` command line: one module per sub-command.

Each module in ``_COMMANDS`` defines ``register(subparsers)``, which adds its parser and sets
``run_fn`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
Heavy imports happen inside the run functions so that ``nmelab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib

_COMMANDS: tuple[str, ...] = ("activations", "train", "reproduce", "analyze")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="nmelab",
        description="Gauss-Newton / NME curvature analysis and sharpness-regularized training.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"nmelab.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nmelab`` script; a :class:`~nmelab.cli.errors.UsageError` exits 2."""
    import sys

    from nmelab.cli.errors import UsageError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run_fn(args) or 0)
    except UsageError as err:
        print(f"nmelab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `nmelab reproduce --plan | head`: the reader has seen enough
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
