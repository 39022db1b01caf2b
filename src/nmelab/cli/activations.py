"""``nmelab activations``: one PNG of f, AD f' and AD f'' for each activation across β."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``activations`` sub-command to ``subparsers``."""
    parser = subparsers.add_parser(
        "activations",
        help="plot each activation with its first and second autodiff derivatives",
        description=(
            "Write a PNG grid: rows ReLU, GELU, beta-GELU (per beta), augmented ReLU (per beta), "
            "diminished GELU; columns f, AD f', AD f'' as returned by JAX autodiff."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("activations.png"),
        metavar="PATH",
        help="output PNG file (default: activations.png)",
    )
    parser.add_argument(
        "--betas",
        type=float,
        nargs="+",
        default=[1.0, 3.0, 10.0, 30.0],
        metavar="BETA",
        help="sharpness values for beta-GELU and augmented ReLU, each > 0 (default: 1 3 10 30)",
    )
    parser.set_defaults(run_fn=run)


def run(args: argparse.Namespace) -> int:
    """Make the figure; return the exit code."""
    from nmelab.plotting_activations import plot_activations

    try:
        path = plot_activations(args.out, betas=args.betas)
    except ValueError as err:  # bad --betas: report like argparse, no traceback
        print(f"nmelab activations: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
