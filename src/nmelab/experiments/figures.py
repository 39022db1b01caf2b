"""Matplotlib figures of the reproduction (PNG and PDF), in the paper's layout.

Training figures (:func:`line_figure`): x is ρ, β or σ²; one line per method and activation with
the mean over seeds and its 95 % t-interval (shaded), every seed as a small dot, and failed seeds
marked at the bottom of the panel - ``x`` for a diverged seed (scored at chance), ``v`` for a
collapsed one (a constant predictor) - with their counts in the legend. The plotted value is the
``score`` of :mod:`nmelab.experiments.results` (test accuracy in percent, diverged at chance), the
same number the claims are computed on.

Fig. 1 (:func:`landscape_figure`) and B.4 (:func:`b4_figure`) draw the exact computations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nmelab.experiments import verdicts

__all__ = ["b4_figure", "landscape_figure", "line_figure", "save"]

_COLORS = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#17becf",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
]
_STYLES = ["-", "--", "-.", ":"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out_base: str | Path) -> list[Path]:
    """Save ``fig`` as ``out_base.png`` (150 dpi) and ``out_base.pdf``; close it; return paths."""
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_suffix(".png"), out_base.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    _pyplot().close(fig)
    return paths


def _set_xscale(ax: Any, xscale: str, xs: Sequence[float]) -> None:
    positive = sorted(x for x in xs if x > 0)
    if xscale == "symlog" and positive:
        ax.set_xscale("symlog", linthresh=positive[0], linscale=0.6)
    elif xscale == "log" and positive:
        ax.set_xscale("log")
    ax.set_xticks(sorted(set(xs)))
    ax.set_xticklabels([f"{x:g}" for x in sorted(set(xs))])
    ax.minorticks_off()


def line_figure(
    table: pd.DataFrame,
    *,
    x_label: str,
    title: str,
    out_base: str | Path,
    xscale: str = "symlog",
    line_order: Sequence[str] | None = None,
    style_fn: Callable[[str], Mapping[str, Any]] | None = None,
    chance: float | None = 10.0,
    panel_titles: Mapping[str, str] | None = None,
    vline: float | None = None,
) -> list[Path]:
    """Accuracy against x, one line per ``table["line"]``, one panel per ``table["panel"]``.

    Args:
      table: a points table (:func:`nmelab.experiments.claims.points_table`).
      x_label: e.g. ``"ρ"``.
      title: the figure title.
      out_base: output path without suffix.
      xscale: ``"symlog"`` (keeps x = 0), ``"log"`` or ``"linear"``.
      line_order: legend order (default: first appearance).
      style_fn: ``line -> matplotlib kwargs`` (color, linestyle, marker).
      chance: chance accuracy in percent, drawn as a dotted line (``None``: none).
      panel_titles: ``panel -> title``.
      vline: an x to mark with a vertical dotted line (e.g. a pre-registered ρ*).

    Returns:
      The PNG and PDF paths.
    """
    plt = _pyplot()
    panels = list(dict.fromkeys(table["panel"])) or [""]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.3), squeeze=False)
    lines = list(line_order or dict.fromkeys(table["line"]))
    for ax, panel in zip(axes[0], panels, strict=True):
        sub = table[table["panel"] == panel]
        xs = sorted(set(sub["x"]))
        finite = sub.loc[sub["status"] != "missing", "score"].to_numpy(dtype=float)
        lo_y = float(np.nanmin(finite)) if finite.size else 0.0
        hi_y = float(np.nanmax(finite)) if finite.size else 100.0
        # Show chance only when some seed is near it; otherwise zoom on the data.
        show_chance = chance is not None and lo_y < chance + 15.0
        if show_chance:
            lo_y = min(lo_y, chance)
        pad = max(0.3, 0.08 * (hi_y - lo_y))
        marker_y = lo_y - 0.55 * pad
        failure_row = 0
        for i, line in enumerate(lines):
            rows = sub[sub["line"] == line]
            if rows.empty:
                continue
            style = {"color": _COLORS[i % len(_COLORS)], "linestyle": "-", "marker": "o"}
            style.update(style_fn(line) if style_fn else {})
            means, los, his, line_xs = [], [], [], []
            for x in sorted(set(rows["x"])):
                vals = rows.loc[np.isclose(rows["x"], x) & (rows["status"] != "missing"), "score"]
                vals = vals.to_numpy(dtype=float)
                if vals.size == 0:
                    continue
                interval = verdicts.mean_interval(vals)
                line_xs.append(x)
                means.append(interval.estimate)
                lo = interval.lo if math.isfinite(interval.lo) else interval.estimate
                hi = interval.hi if math.isfinite(interval.hi) else interval.estimate
                los.append(max(lo, lo_y - pad))
                his.append(min(hi, 100.0))
            seeds = rows.drop_duplicates(["run_id", "seed"])  # a reference run repeats over x
            n_div = int((seeds["status"] == "diverged").sum())
            n_col = int((seeds["status"] == "collapsed").sum())
            label = line
            extras = []
            if n_div:
                extras.append(f"{n_div} diverged")
            if n_col:
                extras.append(f"{n_col} collapsed")
            if extras:
                label += f"  [{', '.join(extras)}]"
            if line_xs:
                ax.plot(line_xs, means, label=label, markersize=4, linewidth=1.6, **style)
                ax.fill_between(line_xs, los, his, color=style["color"], alpha=0.15, linewidth=0)
            ok = rows[rows["status"].isin(["ok", "collapsed"])]
            ax.scatter(ok["x"], ok["score"], s=9, color=style["color"], alpha=0.45, linewidths=0)
            failed = rows[rows["status"].isin(["diverged", "collapsed"])]
            if len(failed):
                # One marker row per line with failures, one marker per (x, outcome), with the
                # count of seeds next to it: markers of different lines never overlap.
                y = marker_y - failure_row * 0.5 * pad
                failure_row += 1
                for (x, status), grp in failed.groupby(["x", "status"]):
                    mark = "x" if status == "diverged" else "v"
                    ax.scatter([x], [y], marker=mark, s=30, color=style["color"], clip_on=False)
                    ax.annotate(
                        f"{len(grp)}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(5 if status == "diverged" else -9, -3),
                        fontsize=7,
                        color=style["color"],
                        annotation_clip=False,
                    )
        if vline is not None:
            ax.axvline(vline, color="0.45", linestyle=":", linewidth=1)
            ax.text(vline, hi_y, " ρ* (pre-registered)", fontsize=7, color="0.35", va="top")
        if show_chance:
            ax.axhline(chance, color="0.5", linestyle=":", linewidth=1)
            ax.text(
                ax.get_xlim()[0], chance, " chance", va="bottom", ha="left", fontsize=7, color="0.4"
            )
        ax.set_ylim(marker_y - (0.6 + 0.5 * max(failure_row - 1, 0)) * pad, min(100.0, hi_y + pad))
        _set_xscale(ax, xscale, xs)
        ax.set_xlabel(x_label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.set_title((panel_titles or {}).get(panel, panel), fontsize=10)
        ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
    fig.suptitle(title, fontsize=11)
    fig.text(
        0.01,
        -0.02,
        "mean ± 95 % t-interval over seeds (shaded); dots: seeds; "
        "at the bottom: x diverged seeds (scored at chance), v collapsed seeds, with counts",
        fontsize=7,
        color="0.35",
    )
    fig.tight_layout()
    return save(fig, out_base)


def landscape_figure(
    arrays: Mapping[str, np.ndarray], summary: Mapping[str, Any], out_base: str | Path
) -> list[Path]:
    """Fig. 1: rows loss, ‖NME_ab‖_F, ‖NME‖_F (all params); one column per activation.

    Region boundaries (zero sets of the hidden pre-activations that vary over the grid) are drawn
    as white lines (first layer solid, second layer dashed).
    """
    plt = _pyplot()
    from matplotlib import colors

    acts = summary["activations"]
    a, b = arrays["a_values"], arrays["b_values"]
    rows = [
        ("loss", "loss ½(z−y)²"),
        ("nme_block", "‖NME‖_F, the 2×2 block of (a, b)"),
        ("nme_full", "‖NME‖_F, all 25 parameters"),
    ]
    fig, axes = plt.subplots(
        len(rows), len(acts), figsize=(3.7 * len(acts), 3.3 * len(rows)), squeeze=False
    )
    for j, act in enumerate(acts):
        key = act["key"]
        preacts = arrays[f"{key}__preacts"]
        for i, (field, label) in enumerate(rows):
            ax = axes[i, j]
            values = arrays[f"{key}__{field}"]
            vmax = float(values.max())
            if field == "loss":
                norm = colors.LogNorm(vmin=max(float(values.min()), vmax * 1e-4), vmax=vmax)
                mesh = ax.pcolormesh(
                    a, b, np.maximum(values, vmax * 1e-4), norm=norm, cmap="viridis", shading="auto"
                )
            else:
                mesh = ax.pcolormesh(
                    a,
                    b,
                    values,
                    cmap="magma",
                    shading="auto",
                    vmin=0.0,
                    vmax=vmax if vmax > 0 else 1.0,
                )
            fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.03)
            spread = preacts.max(axis=(0, 1)) - preacts.min(axis=(0, 1))
            for unit in range(preacts.shape[-1]):
                if spread[unit] <= 1e-9:
                    continue
                ax.contour(
                    a,
                    b,
                    preacts[..., unit],
                    levels=[0.0],
                    colors="white",
                    linewidths=1.1,
                    linestyles="-" if unit < 3 else "--",
                )
            if field != "loss" and vmax == 0.0:
                ax.text(
                    0.05,
                    0.62,
                    "≡ 0 everywhere (AD ReLU'' = 0)",
                    transform=ax.transAxes,
                    ha="left",
                    va="top",
                    color="white",
                    fontsize=10,
                    bbox={"facecolor": "black", "alpha": 0.5},
                )
            if i == 0:
                title = act["label"].replace("beta_gelu", "β-GELU").replace("relu", "ReLU")
                ax.set_title(title + (" = GELU" if title.endswith("(β=1)") else ""))
            if j == 0:
                ax.set_ylabel(f"{label}\n\nb = W₁[0, 1]", fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel("a = W₁[0, 0]")
            ax.set_aspect("equal")
    fig.suptitle(
        "Fig. 1: loss and NME norm over two first-layer weights of a 2-3-3-1 MLP, MSE on one point\n"
        "white lines: region boundaries (a hidden pre-activation = 0; solid layer 1, dashed layer 2)",
        fontsize=10,
    )
    fig.tight_layout()
    return save(fig, out_base)


def b4_figure(
    arrays: Mapping[str, np.ndarray], summary: Mapping[str, Any], out_base: str | Path
) -> list[Path]:
    """B.4: per-direction factors, their relative gap, and three trajectories."""
    plt = _pyplot()
    t = int(summary["t"])
    x = arrays["fine_eta_lambda"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(x, (1 - x - 0.5 * x**2) ** 2, label="penalty (ρ = η/2): 2 steps at η")
    ax.plot(x, 1 - 2 * x, "--", label="GD: 1 step at 2η")
    ax.plot(x, (1 - x) ** 2, ":", color="0.4", label="GD: 2 steps at η (no penalty)")
    sim_x = arrays["sim_eta_lambda"]
    theta0 = arrays["sim_theta0"]
    ax.plot(
        sim_x,
        arrays["sim_pusam"][2] / theta0,
        "o",
        ms=3,
        color="C0",
        label="simulated penalty step (nmelab HVP)",
    )
    ax.plot(
        sim_x,
        arrays["sim_gd_2eta"][1] / theta0,
        "s",
        ms=3,
        mfc="none",
        color="C1",
        label="simulated GD 2η step",
    )
    ax.set_xscale("log")
    ax.set_ylim(-1.5, 1.1)
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set_xlabel("ηλ (eigen-direction)")
    ax.set_ylabel("factor on θ along the eigenvector")
    ax.set_title("one step pair: (1 − x − x²/2)² vs 1 − 2x  (eq. 51-52)", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(True, alpha=0.3)
    ax = axes[1]
    ax.loglog(
        x,
        np.maximum(arrays["closed_relative_gap"], 1e-17),
        label=f"after {2 * t} penalty steps vs {t} GD 2η steps",
    )
    ax.loglog(x, np.minimum(t * x**3, 10.0), ":", color="0.4", label="leading order t·(ηλ)³")
    ax.set_ylim(1e-10, 3)
    ax.set_xlabel("ηλ")
    ax.set_ylabel("relative gap |a − b| / max(|a|, |b|)")
    ax.set_title("agree for ηλ ≪ 1, part at ηλ = O(1)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    ax = axes[2]
    n_traj = 3
    steps_p = np.arange(arrays["sim_pusam"].shape[0])
    steps_g = 2 * np.arange(arrays["sim_gd_2eta"].shape[0])
    for k in range(n_traj):
        col = -n_traj + k
        xk = sim_x[col]
        ax.plot(
            steps_p,
            arrays["sim_pusam"][:, col] / theta0[col],
            color=f"C{k + 2}",
            label=f"ηλ = {xk:g}: penalty",
        )
        ax.plot(
            steps_g,
            arrays["sim_gd_2eta"][:, col] / theta0[col],
            "o--",
            ms=3,
            color=f"C{k + 2}",
            alpha=0.7,
            label=f"ηλ = {xk:g}: GD 2η",
        )
    ax.set_xlabel("steps at η (GD 2η plotted at 2k)")
    ax.set_ylabel("θ / θ_0 along the eigenvector")
    ax.set_title("trajectories", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.suptitle(
        f"App. B.4: quadratic L = ½θᵀHθ, η = {summary['learning_rate']:g}, t = {t}", fontsize=11
    )
    fig.tight_layout()
    return save(fig, out_base)
