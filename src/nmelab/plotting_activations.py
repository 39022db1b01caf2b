"""Figure of each activation and its first and second derivatives *as JAX autodiff returns them*.

Rows: ReLU, GELU, β-GELU (one curve per β), augmented ReLU (one curve per β), diminished GELU.
Columns: f, AD f', AD f''. The point of the figure is what AD returns, not the true
derivatives: AD ReLU'' is 0 (the Dirac delta is missing), augmented ReLU'' is the Gaussian of
eq. 15 although its forward is ReLU, diminished GELU'' is 0 (eq. 16) although its forward is GELU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nmelab import activations, validation

__all__ = ["check_betas", "plot_activations"]

_X_LIMIT = 3.0


def _ad_curves(fn, x: jax.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return f, AD f', AD f'' of an elementwise ``fn`` on the grid ``x``."""
    d1 = jax.grad(fn)
    d2 = jax.grad(d1)
    return tuple(np.asarray(jax.vmap(g)(x)) for g in (fn, d1, d2))


def check_betas(betas: Sequence[float]) -> list[float]:
    """Return ``betas`` as floats, each finite and > 0 (the sharpness of β-GELU, eq. 13).

    Raises:
        TypeError: a β that is not a real number.
        ValueError: an empty sequence, or a β that is not finite or ≤ 0 (its index is named).
    """
    betas = list(betas)
    if not betas:
        raise ValueError("betas must hold at least one value > 0, got an empty sequence")
    return [
        validation.check_number(b, f"betas[{i}]", minimum=0.0, strict=True)
        for i, b in enumerate(betas)
    ]


def plot_activations(
    path: str | Path,
    betas: Sequence[float] = (1, 3, 10, 30),
    *,
    num_points: int = 6001,
    dpi: int = 120,
) -> Path:
    """Save a PNG grid of f, AD f' and AD f'' for each activation across ``betas``.

    The second-derivative panels of the β rows use a symmetric-log y axis (linear within
    ±1): β-GELU'' peaks at 2β/√(2π) (eq. 14, corrected prefactor) and augmented ReLU'' at
    β/√(2π) (eq. 15), so on a linear axis large β hides small β. A dot marks the AD value at
    exactly x = 0 (Θ(0) = 0 for ReLU' and augmented ReLU').

    Args:
        path: output file (PNG); parent folders are created.
        betas: sharpness values for β-GELU and augmented ReLU, each finite and > 0.
        num_points: grid points on [−3, 3] (odd, so that 0 is on the grid).
        dpi: resolution of the saved image.

    Returns:
        The path written.

    Raises:
        TypeError: a β that is not a real number, or a non-integer ``num_points``.
        ValueError: empty ``betas``, a β not finite or ≤ 0, or ``num_points`` < 3.
    """
    from matplotlib.figure import Figure  # Agg canvas via savefig; no pyplot global state

    betas = check_betas(betas)
    num_points = validation.check_count(num_points, "num_points", 3)
    num_points += 1 - num_points % 2  # odd: x = 0 exactly on the grid

    x = jnp.linspace(-_X_LIMIT, _X_LIMIT, num_points, dtype=jnp.float32)
    x_np = np.asarray(x)
    zero = jnp.zeros((), jnp.float32)
    colors = ("#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b")

    rows: list[tuple[str, list[tuple[str, object]], str]] = [
        ("ReLU", [("ReLU", activations.relu)], "AD f'' = 0: the δ at 0 is missing"),
        ("GELU (exact, x·Φ(x))", [("GELU", activations.gelu)], ""),
        (
            "β-GELU  x·Φ(βx)  (eq. 13-14)",
            [(f"β = {b:g}", activations.get("beta_gelu", beta=b)) for b in betas],
            "f''(0) = 2β/√(2π), ∫f'' = 1",
        ),
        (
            "augmented ReLU (eq. 15)",
            [(f"β = {b:g}", activations.get("augmented_relu", beta=b)) for b in betas],
            "AD f'' = β·φ(βx), ∫ = 1",
        ),
        (
            "diminished GELU (eq. 16)",
            [("diminished GELU", activations.diminished_gelu)],
            "AD f'' = 0 by construction",
        ),
    ]
    column_titles = ("f", "AD f'", "AD f''")

    fig = Figure(figsize=(13.5, 16.0), layout="constrained")
    axes = fig.subplots(len(rows), 3)
    fig.suptitle(
        "Activations and their JAX autodiff derivatives "
        "(f'' of β rows: symlog y, linear in ±1; dot = AD value at x = 0)",
        fontsize=13,
    )
    true_gelu_second = np.asarray(jax.vmap(jax.grad(jax.grad(activations.gelu)))(x))

    for r, (row_title, curves, note) in enumerate(rows):
        multi = len(curves) > 1
        for c in range(3):
            ax = axes[r, c]
            for k, (label, fn) in enumerate(curves):
                values = _ad_curves(fn, x)
                at_zero = _ad_curves(fn, zero[None])
                color = colors[k % len(colors)]
                ax.plot(x_np, values[c], color=color, lw=1.6, label=label)
                ax.plot([0.0], [at_zero[c][0]], "o", color=color, ms=3.5)
            if r == len(rows) - 1 and c == 2:
                ax.plot(x_np, true_gelu_second, "--", color="0.55", lw=1.2, label="true GELU''")
            if multi and c == 2:
                ax.set_yscale("symlog", linthresh=1.0)
            ax.axhline(0.0, color="0.8", lw=0.6, zorder=0)
            ax.axvline(0.0, color="0.8", lw=0.6, zorder=0)
            ax.set_xlim(-_X_LIMIT, _X_LIMIT)
            ax.grid(True, alpha=0.25)
            ax.tick_params(labelsize=9)
            title = f"{row_title} — {column_titles[c]}"
            if c == 2 and note:
                title += f"\n{note}"
            if row_title.startswith("augmented") and c < 2:
                title += "\n(ReLU; identical for every β)"
            if c == 2 and multi:
                title += "  [symlog y]"
            ax.set_title(title, fontsize=10)
            if r == len(rows) - 1:
                ax.set_xlabel("x", fontsize=10)
            if (multi and c == 0) or (r == len(rows) - 1 and c == 2):
                ax.legend(fontsize=8, loc="upper left", framealpha=0.85)
        if not multi:
            axes[r, 2].set_ylim(*_padded_limits(axes[r, 2].get_ylim()))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _padded_limits(limits: tuple[float, float]) -> tuple[float, float]:
    """Keep a visible range for identically-zero curves (default limits collapse to ±tiny)."""
    low, high = limits
    if math.isclose(low, high, abs_tol=1e-6) or (abs(low) < 1e-6 and abs(high) < 1e-6):
        return -1.0, 1.0
    return low, high
