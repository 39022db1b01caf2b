"""``nmelab activations``: one PNG of f, AD f' and AD f'' for each activation across β."""

from __future__ import annotations

import argparse
from pathlib import Path

from nmelab.cli.errors import UsageError, check_output_file

__all__ = ["register", "run"]


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
    """Check ``--out`` and ``--betas`` before any work, then make the figure; return the exit code.

    Raises:
      UsageError: ``--out`` cannot be written (a folder, under a file, not writable) or a
        ``--betas`` value is not finite and > 0.
    """
    from nmelab.plotting_activations import check_betas, plot_activations

    out = check_output_file(args.out, arg="--out")
    try:
        betas = check_betas(args.betas)
    except (TypeError, ValueError) as err:
        raise UsageError(f"--betas: {err}") from None
    path = plot_activations(out, betas=betas)
    print(f"wrote {path}")
    return 0
