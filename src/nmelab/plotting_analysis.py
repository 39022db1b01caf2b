"""Figure of the NME diagonal of one analysed model, per layer (paper section 4.3, App. A.2).

Panels: the sorted magnitudes ``|diag NME| / max`` of each layer (a rank plot: a sparse, spiky
diagonal falls off steeply, exact zeros drop off the log axis); the fraction of entries above
``1e-3 · max|d|`` and the top-1 % share of ``Σ|d|`` per layer; and the Frobenius norms of the NME's
blocks between layers (for a ReLU network the within-layer blocks vanish, App. A.2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jax.flatten_util import ravel_pytree

from nmelab.analysis import Analysis
from nmelab.estimators import param_groups

__all__ = ["plot_nme_diagonal"]


def plot_nme_diagonal(
    result: Analysis, path: str | Path, *, title: str | None = None, dpi: int = 120
) -> Path:
    """Save the per-layer NME-diagonal structure of ``result`` as a PNG.

    Args:
      result: an :class:`~nmelab.analysis.Analysis`.
      path: the PNG to write (parent folders are created).
      title: an optional figure title.
      dpi: resolution.

    Returns:
      The path written.
    """
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    diag_tree = result.nme_diagonal.value
    flat = np.asarray(ravel_pytree(diag_tree)[0], dtype=np.float64)
    groups = param_groups(diag_tree, "layer")
    colors = colormaps["viridis"](np.linspace(0.05, 0.9, len(groups)))
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    rank_ax, bar_ax, block_ax = fig.subplots(1, 3)
    kind = "exact" if result.nme_diagonal_exact else "Hutchinson estimate"
    for (name, index), color in zip(groups, colors, strict=True):
        mags = np.sort(np.abs(flat[index]))[::-1]
        peak = mags[0] if mags.size and mags[0] > 0 else 1.0
        rank = np.arange(1, mags.size + 1) / mags.size
        label = name if mags[0] > 0 else f"{name}: exactly 0"
        rank_ax.plot(rank, np.maximum(mags / peak, 1e-12), color=color, label=label)
    rank_ax.set(xscale="log", yscale="log", ylim=(1e-8, 2), xlabel="rank / layer size")
    rank_ax.set_ylabel("|diag NME| / layer max")
    rank_ax.set_title(f"sorted |diag NME| per layer ({kind})", fontsize=10)
    rank_ax.legend(fontsize=7)

    names = [name for name, _ in groups]
    stats = [result.nme_layer_statistics[name] for name in names]
    positions = np.arange(len(names))
    bar_ax.bar(positions - 0.2, [s.fraction_above for s in stats], 0.4, label="frac > 1e-3·max")
    bar_ax.bar(positions + 0.2, [s.top_k_share for s in stats], 0.4, label="top-1% share of Σ|d|")
    for position, layer in zip(positions, stats, strict=True):
        if layer.max_abs == 0:
            bar_ax.annotate("diag = 0", (position, 0.02), ha="center", fontsize=8)
    bar_ax.set_xticks(positions, names, rotation=30, ha="right", fontsize=7)
    bar_ax.set_ylim(0, 1.05)
    bar_ax.set_title("sparsity and concentration per layer", fontsize=10)
    bar_ax.legend(fontsize=8)
    bar_ax.grid(alpha=0.3, axis="y")

    blocks = result.nme_block_norms
    norms = np.asarray(blocks.norms, dtype=np.float64)
    positive = norms[norms > 0]
    norm = LogNorm(positive.min(), positive.max()) if positive.size else None
    image = block_ax.imshow(np.where(norms > 0, norms, np.nan), cmap="magma", norm=norm)
    block_ax.set_xticks(range(len(blocks.names)), blocks.names, rotation=30, ha="right", fontsize=7)
    block_ax.set_yticks(range(len(blocks.names)), blocks.names, fontsize=7)
    exact = "exact" if blocks.exact else "probed"
    block_ax.set_title(f"‖NME block‖_F between layers ({exact}; blank = 0)", fontsize=10)
    fig.colorbar(image, ax=block_ax, shrink=0.85)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
