"""Figures: a flat module of plot functions, each writing one PNG and returning its path.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot`` global state, no
backend switch) and saves it with the Agg canvas, so it works headless and in threads.

* :func:`plot_spectral_densities` - the SLQ densities of H, GN and NME side by side.
* :func:`plot_diagonal_statistics_vs_beta` - sparsity and spikiness of the NME diagonal across
  β for β-GELU (paper section 4.3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nmelab.estimators.density import SpectralDensity, default_sigma, density_on_grid
from nmelab.estimators.diagnostics import DiagonalStatistics

_TITLES = {"hessian": "Hessian H", "gauss_newton": "Gauss-Newton GN", "nme": "NME"}
_COLORS = {"hessian": "tab:blue", "gauss_newton": "tab:green", "nme": "tab:red"}


def _save(fig: Any, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def plot_spectral_densities(
    densities: Mapping[str, SpectralDensity],
    path: str | Path,
    *,
    extremes: Mapping[str, tuple[float, float]] | None = None,
    sigma_fraction: float = 0.01,
    num_points: int = 2000,
    floor: float = 1e-6,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Save one panel per operator with its smoothed SLQ spectral density on a log axis.

    Each density is :func:`~nmelab.estimators.density.density_on_grid` with a Gaussian width of
    ``sigma_fraction`` of that operator's node range; it integrates to one, so the log axis shows
    how little mass the outliers carry next to the bulk at zero. Vertical dashed lines mark
    ``(λ_min, λ_max)`` from ``extremes`` (e.g. Lanczos eigenpairs).

    Args:
      densities: ``{name: SpectralDensity}``; names ``"hessian"``, ``"gauss_newton"``, ``"nme"``
        get titles and colours, any other name is used as is.
      path: the PNG to write (parent folders are created).
      extremes: optional ``{name: (λ_min, λ_max)}``.
      sigma_fraction: Gaussian width as a fraction of each operator's node range, ``> 0``.
      num_points: grid points per panel.
      floor: the lowest density drawn, relative to each panel's peak (log axis).
      title: an optional figure title.
      dpi: resolution.

    Returns:
      The path written.

    Raises:
      ValueError: for no densities or a non-positive ``sigma_fraction``.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not densities:
        raise ValueError("densities must name at least one SpectralDensity")
    if not sigma_fraction > 0:
        raise ValueError(f"sigma_fraction must be > 0, got {sigma_fraction!r}")
    fig = Figure(figsize=(4.6 * len(densities), 3.9), layout="constrained")
    axes = fig.subplots(1, len(densities), squeeze=False)[0]
    for ax, (name, sld) in zip(axes, densities.items(), strict=True):
        sigma = default_sigma(sld, sigma_fraction)
        grid = sld.grid(num_points, sigma)
        values = np.asarray(density_on_grid(sld, grid, sigma))
        color = _COLORS.get(name, "tab:purple")
        ax.fill_between(grid, np.maximum(values, floor * values.max()), color=color, alpha=0.25)
        ax.plot(grid, values, color=color, lw=1.4)
        ax.set_yscale("log")
        ax.set_ylim(floor * values.max(), 2 * values.max())
        ax.axvline(0.0, color="0.6", lw=0.8)
        if extremes and name in extremes:
            lo, hi = extremes[name]
            for value, label, side in ((lo, "λmin", "left"), (hi, "λmax", "right")):
                ax.axvline(value, color="k", ls="--", lw=0.9)
                ax.annotate(
                    f"{label} = {value:.3g}",
                    (value, values.max()),
                    xytext=(4 if side == "left" else -4, -14),
                    textcoords="offset points",
                    ha=side,
                    fontsize=8,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8},
                )
        ax.xaxis.set_major_locator(MaxNLocator(5))
        num_probes, num_nodes = sld.nodes.shape
        ax.set_title(f"{_TITLES.get(name, name)}  (SLQ: {num_probes} probes × {num_nodes} steps)")
        ax.set_xlabel("eigenvalue λ")
        ax.set_ylabel(f"density φ_σ(λ), σ = {sigma:.2g}")
        ax.grid(alpha=0.3, which="major")
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def plot_diagonal_statistics_vs_beta(
    betas: Sequence[float],
    statistics: Sequence[DiagonalStatistics],
    path: str | Path,
    *,
    diagonals: Sequence[np.ndarray] | None = None,
    reference: tuple[str, DiagonalStatistics] | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Save the NME-diagonal sparsity and spikiness against β (paper section 4.3, eq. 11-14).

    Panels: (optional) the sorted magnitudes ``|d|/max|d|`` per β (a rank plot: a sparse, spiky
    diagonal falls off steeply); the fraction of entries above the statistics' threshold; the
    excess kurtosis; and the share of ``Σ|d|`` held by the top-k entries. A ``reference`` (e.g.
    ``("GELU", stats)``) is drawn as a horizontal line.

    Args:
      betas: the β values, ``> 0``.
      statistics: one :class:`~nmelab.estimators.diagnostics.DiagonalStatistics` per β.
      path: the PNG to write.
      diagonals: optional raveled diagonals per β, for the rank plot.
      reference: optional ``(label, statistics)`` drawn as a dashed line.
      title: an optional figure title.
      dpi: resolution.

    Returns:
      The path written.

    Raises:
      ValueError: for mismatched lengths, no β, or a β that is not positive.
    """
    from matplotlib.figure import Figure

    betas = [float(b) for b in betas]
    if not betas or len(betas) != len(statistics):
        raise ValueError(
            f"betas and statistics must be non-empty and of equal length, got {len(betas)} "
            f"and {len(statistics)}"
        )
    if any(not b > 0 for b in betas):
        raise ValueError(f"betas must be > 0, got {betas}")
    if diagonals is not None and len(diagonals) != len(betas):
        raise ValueError(f"diagonals must have one entry per beta, got {len(diagonals)}")
    panels = 3 + (diagonals is not None)
    fig = Figure(figsize=(4.2 * panels, 3.8), layout="constrained")
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    cmap = _beta_colors(len(betas))
    if diagonals is not None:
        ax = axes.pop(0)
        for beta, diag, color in zip(betas, diagonals, cmap, strict=True):
            mags = np.sort(np.abs(np.ravel(diag)))[::-1]
            peak = mags[0] if mags.size and mags[0] > 0 else 1.0
            rank = np.arange(1, mags.size + 1) / mags.size
            ax.plot(rank, np.maximum(mags / peak, 1e-12), color=color, label=f"β = {beta:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-8, 2)
        ax.set_xlabel("rank / P")
        ax.set_ylabel("|diag NME| / max")
        ax.set_title("sorted |diag NME| (exact zeros drop off)", fontsize=10)
        ax.legend(fontsize=8)
    tol_note = _threshold_note(statistics)
    series = [
        ("fraction_above", f"fraction of entries above {tol_note}", "fraction above threshold"),
        ("kurtosis", "excess kurtosis of the diagonal", "excess kurtosis"),
        ("top_k_share", "share of Σ|d| in the top-k entries", "top-k share"),
    ]
    for ax, (field, heading, ylabel) in zip(axes, series, strict=True):
        values = [getattr(s, field) for s in statistics]
        ax.plot(betas, values, "o-", color="tab:red", label="β-GELU")
        for beta, value, color in zip(betas, values, cmap, strict=True):
            ax.plot([beta], [value], "o", color=color, ms=7)
        if reference is not None:
            ref_value = getattr(reference[1], field)
            if np.isfinite(ref_value):
                ax.axhline(ref_value, color="0.3", ls="--", lw=1, label=reference[0])
        ax.set_xscale("log")
        if field == "kurtosis" and all(np.isfinite(v) and v > 0 for v in values):
            ax.set_yscale("log")
        if field == "top_k_share":
            ax.set_ylim(0, 1.02)
            ks = sorted({s.top_k for s in statistics})
            heading += f" (k = {ks[0]})" if len(ks) == 1 else ""
        if field == "fraction_above":
            ax.set_ylim(0, 1.02)
        ax.set_xlabel("β (β-GELU sharpness)")
        ax.set_ylabel(ylabel)
        ax.set_title(heading, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def _beta_colors(num: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.05, 0.9, num)]


def _threshold_note(statistics: Sequence[DiagonalStatistics]) -> str:
    """``"1e-3·max|d|"`` when every threshold is the same fraction of its maximum, else ``"tol"``."""
    ratios = {
        round(s.threshold / s.max_abs, 12) for s in statistics if s.max_abs > 0 and s.threshold > 0
    }
    if len(ratios) == 1:
        (ratio,) = ratios
        exponent = math.log10(ratio)
        text = f"1e{int(exponent)}" if exponent == int(exponent) else f"{ratio:g}"
        return f"{text}·max|d|"
    return "tol"
