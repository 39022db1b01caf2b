"""The mechanism (§4.3, §6.1, App. B.3): does the pointwise Hessian predict what a SAM step sees?

The paper's explanation of Fig. 2-6: an explicit gradient penalty uses the autodiff product
``H g`` (pointwise second-order information), SAM uses the gradient after a finite step
``ρ g/‖g‖``. For ReLU the autodiff ``H`` misses every kink the step crosses (AD ReLU'' = 0), so
``ρHu`` predicts the real gradient change ``Δg = g(θ + ρu) − g(θ)`` poorly; for GELU it predicts
it well. We measure that premise directly with
:func:`nmelab.estimators.fidelity.second_order_fidelity` (issue 9): the cosine between ``ρHu``
and ``Δg``, ``u = g/‖g‖``, on a fixed probe batch, logged by the trainer's curvature tracking
(``curvature.fidelity_rhos``) during SGD training, for every seed.

Setup per scale:

* ``quick``: MNIST-1D, MLP 40-256-256-10 (the pilot's measurement), SGD, lr 0.2, 20 epochs,
  3 seeds; activations ReLU, GELU, β-GELU (β = 3, 10, 30), augmented ReLU (β = 1, 3), diminished
  GELU; fidelity at ρ ∈ {0.003, 0.01, 0.03, 0.1, 0.3} on 256 probe examples, every 4 epochs.
  "Early" is the first measurement after step 0 (epoch 4), "late" the last (end of training).
* ``small``: the same with 5 seeds and 60 epochs, plus the quick scale's CNN-BN (30 epochs; BN in
  eval mode).
* ``paper``: CIFAR-10 WRN-28-10 for ReLU, GELU and the custom activations, 20 epochs.

Claim measured: cos(GELU) − cos(ReLU) of ``ρHu`` vs ``Δg`` at ρ = 0.1, late in training
(paper: > 0; margin 0.05 in cosine). ρ = 0.1 is fixed in advance as the paper's headline value
(Fig. 2, 3); the other ρ are details.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nmelab.experiments import claims as C
from nmelab.experiments import figures, verdicts
from nmelab.experiments.registry import (
    Experiment,
    Point,
    Scale,
    activation_label,
    base_config,
    training_specs,
)
from nmelab.experiments.sweep import run_dir
from nmelab.train.metrics_io import read_jsonl

FIDELITY_RHOS = (0.003, 0.01, 0.03, 0.1, 0.3)
PRIMARY_RHO = 0.1
COSINE_MARGIN = 0.05
ACTIVATIONS: tuple[tuple[str, dict[str, float]], ...] = (
    ("relu", {}),
    ("gelu", {}),
    ("beta_gelu", {"beta": 3.0}),
    ("beta_gelu", {"beta": 10.0}),
    ("beta_gelu", {"beta": 30.0}),
    ("augmented_relu", {"beta": 1.0}),
    ("augmented_relu", {"beta": 3.0}),
    ("diminished_gelu", {}),
)
MODELS = {
    "quick": (("", "mlp", 20.0),),
    "small": (("MLP", "mlp", 60.0), ("CNN-BN", "cnn1d_bn", 30.0)),
    "paper": (("CIFAR-10", "cifar10", 20.0),),
}
PAPER_ACTIVATIONS = ("relu", "gelu", "augmented_relu", "diminished_gelu")
PREDICTORS = ("hessian", "gauss_newton", "nme")


def _activations(scale: Scale):
    if scale.name == "paper":
        return [(a, p) for a, p in ACTIVATIONS if a in PAPER_ACTIVATIONS and p.get("beta", 1) == 1]
    return list(ACTIVATIONS)


def points(scale: Scale) -> list[Point]:
    """One SGD run with fidelity tracking per activation (and model at ``small``)."""
    out = []
    for panel, recipe, epochs in MODELS[scale.name]:
        base = base_config(recipe, scale)
        steps_per_epoch = 4000 // base["batch_size"] if base["dataset"] == "mnist1d" else 390
        curvature = dict(base["curvature"])
        curvature.update(
            every_steps=4 * steps_per_epoch,
            num_probes=2,
            probe_batch_size=256,
            lanczos_iters=2,
            fidelity_rhos=list(FIDELITY_RHOS),
        )
        for act, params in _activations(scale):
            spec = training_specs(
                base,
                activation=act,
                activation_params=params,
                num_epochs=epochs,
                curvature=curvature,
            )
            out.append(Point(activation_label(act, params), 0.0, spec, panel))
    return out


def describe(scale: Scale) -> str:
    """The setup in one paragraph."""
    models = ", ".join(f"{recipe} ({epochs:g} epochs)" for _, recipe, epochs in MODELS[scale.name])
    acts = ", ".join(activation_label(a, p) for a, p in _activations(scale))
    rhos = ", ".join(f"{r:g}" for r in FIDELITY_RHOS)
    return (
        f"SGD training of {models} on {'CIFAR-10' if scale.name == 'paper' else 'MNIST-1D'} "
        f"with {acts}; every 4 epochs the trainer measures, on 256 fixed training examples, "
        f"the cosine between ρHu and Δg = g(θ+ρu) − g(θ), u = g/‖g‖, for ρ ∈ {{{rhos}}}; "
        f"early = epoch 4, late = end of training; {scale.num_seeds} seeds."
    )


def fidelity_table(points_list: list[Point], root: str | Path) -> pd.DataFrame:
    """Per (activation, panel, stage, seed, ρ): the three cosines and residuals.

    Stage ``"early"`` is the first record after step 0, ``"late"`` the last. Diverged seeds are
    left out (their parameters are frozen at the last finite state).
    """
    rows = []
    for point, spec in ((p, s) for p in points_list for s in p.specs):
        records = [
            r for r in read_jsonl(run_dir(root, spec) / "curvature.jsonl") if "fidelity_rhos" in r
        ]
        if not (run_dir(root, spec) / "result.json").exists() or len(records) < 2:
            continue
        first_seed = int(spec.config.get("seed", 0))
        later = [r for r in records if r["step"] > 0]
        for stage, record in (("early", later[0]), ("late", records[-1])):
            rhos = record["fidelity_rhos"]
            diverged = record.get("diverged", [False] * len(record["fidelity_hessian_cosine"]))
            for seed_index, is_diverged in enumerate(diverged):
                if is_diverged:
                    continue
                for j, rho in enumerate(rhos):
                    row = {
                        "line": point.line,
                        "panel": point.panel,
                        "stage": stage,
                        "step": record["step"],
                        "epoch": record.get("epoch"),
                        "seed": first_seed + seed_index,
                        "rho": float(rho),
                    }
                    for predictor in PREDICTORS:
                        for metric in ("cosine", "residual"):
                            values = record.get(f"fidelity_{predictor}_{metric}")
                            value = values[seed_index][j] if values else None
                            row[f"{predictor}_{metric}"] = math.nan if value is None else value
                    rows.append(row)
    columns = ["line", "panel", "stage", "step", "epoch", "seed", "rho"] + [
        f"{p}_{m}" for p in PREDICTORS for m in ("cosine", "residual")
    ]
    return pd.DataFrame.from_records(rows, columns=columns)


def _cos(
    fid: pd.DataFrame,
    line: str,
    rho: float,
    stage: str,
    panel: str = "",
    column: str = "hessian_cosine",
) -> np.ndarray:
    mask = (
        (fid["line"] == line)
        & (fid["panel"] == panel)
        & (fid["stage"] == stage)
        & np.isclose(fid["rho"], rho)
    )
    values = fid.loc[mask, column].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _diff(fid, a, b, rho, stage, panel="") -> verdicts.Interval:
    return C.safe_contrast(
        [_cos(fid, a, rho, stage, panel), _cos(fid, b, rho, stage, panel)], [1.0, -1.0]
    )


def claims(table: pd.DataFrame, scale: Scale, root: str | Path) -> list[C.Claim]:
    """cos(GELU) − cos(ReLU) at ρ = 0.1, late in training, per model."""
    pts = points(scale)
    fid = fidelity_table(pts, root)
    relu, gelu = activation_label("relu"), activation_label("gelu")
    aug = activation_label("augmented_relu", {"beta": 1.0})
    dim = activation_label("diminished_gelu")
    out = []
    for panel, _, _ in MODELS[scale.name]:
        suffix = f" [{panel}]" if panel else ""
        details = [
            (
                f"cos ρHu vs Δg, {name}, late, ρ = {PRIMARY_RHO:g}",
                C.safe_contrast([_cos(fid, line, PRIMARY_RHO, "late", panel)], [1.0]),
            )
            for name, line in (("ReLU", relu), ("GELU", gelu))
        ]
        details += [
            (f"GELU − ReLU, late, ρ = {r:g}", _diff(fid, gelu, relu, r, "late", panel))
            for r in FIDELITY_RHOS
            if r != PRIMARY_RHO
        ]
        details += [
            (f"GELU − ReLU, early, ρ = {r:g}", _diff(fid, gelu, relu, r, "early", panel))
            for r in FIDELITY_RHOS
        ]
        details += [
            (
                f"augmented ReLU (β=1) − ReLU, late, ρ = {PRIMARY_RHO:g}",
                _diff(fid, aug, relu, PRIMARY_RHO, "late", panel),
            ),
            (
                f"GELU − diminished GELU, late, ρ = {PRIMARY_RHO:g}",
                _diff(fid, gelu, dim, PRIMARY_RHO, "late", panel),
            ),
        ]
        notes = []
        if fid.empty or fid[fid["panel"] == panel].empty:
            notes.append("No fidelity records found (runs missing or tracking off).")
        out.append(
            C.Claim(
                key="mechanism" + (f"-{panel}" if panel else ""),
                section="§4.3, §6.1, App. B.3 (premise)",
                statement=(
                    "The autodiff Hessian product ρHu predicts the gradient change Δg a SAM step "
                    f"sees much worse for ReLU than for GELU.{suffix}"
                ),
                effect_name=f"cos(ρHu, Δg): GELU − ReLU at ρ = {PRIMARY_RHO:g}, end of training",
                effect=_diff(fid, gelu, relu, PRIMARY_RHO, "late", panel),
                direction=+1,
                margin=COSINE_MARGIN,
                unit="cosine",
                details=details,
                notes=notes,
            )
        )
    return out


def premise_cells(scale: Scale, root: str | Path) -> dict[str, list[tuple[str, float, Any, str]]]:
    """Per model: ``(stage, ρ, interval of cos GELU − cos ReLU, verdict)`` for every cell.

    The verdict uses the same rule and margin as the claim; it shows where, beyond the
    pre-registered cell, the premise holds or fails.
    """
    fid = fidelity_table(points(scale), root)
    relu, gelu = activation_label("relu"), activation_label("gelu")
    out: dict[str, list[tuple[str, float, Any, str]]] = {}
    for panel, _, _ in MODELS[scale.name]:
        cells = []
        for stage in ("early", "late"):
            for rho in FIDELITY_RHOS:
                iv = _diff(fid, gelu, relu, rho, stage, panel)
                cells.append((stage, rho, iv, verdicts.judge(iv, +1, COSINE_MARGIN)))
        out[panel] = cells
    return out


def premise_text(scale: Scale, root: str | Path) -> list[str]:
    """One plain sentence per model: where the premise holds, fails, or is undecided."""
    sentences = []
    words = {verdicts.REPRODUCED: "holds (GELU's cosine clearly higher)",
             verdicts.NOT_REPRODUCED: "fails (difference ruled out above 0.05)",
             verdicts.INCONCLUSIVE: "is undecided"}  # fmt: skip
    for panel, cells in premise_cells(scale, root).items():
        parts = []
        for verdict in (verdicts.REPRODUCED, verdicts.NOT_REPRODUCED, verdicts.INCONCLUSIVE):
            where = [f"{stage} ρ={rho:g}" for stage, rho, _, v in cells if v == verdict]
            if where:
                parts.append(f"{words[verdict]} at {', '.join(where)}")
        prefix = f"{panel}: " if panel else ""
        sentences.append(prefix + "across all cells, the premise " + "; ".join(parts) + ".")
    return sentences


def summary_rows(scale: Scale, root: str | Path) -> list[dict[str, Any]]:
    """The mechanism table: per (model, activation, stage), the mean cosine at every ρ with CIs."""
    fid = fidelity_table(points(scale), root)
    rows = []
    if fid.empty:
        return rows
    for (panel, line, stage), sub in fid.groupby(["panel", "line", "stage"], sort=False):
        row: dict[str, Any] = {
            "model": panel,
            "activation": line,
            "stage": stage,
            "epoch": float(sub["epoch"].iloc[0]),
        }
        for rho in FIDELITY_RHOS:
            vals = sub.loc[np.isclose(sub["rho"], rho), "hessian_cosine"].to_numpy(dtype=float)
            vals = vals[np.isfinite(vals)]
            row[rho] = verdicts.mean_interval(vals) if vals.size else C.NAN_INTERVAL
        rows.append(row)
    return rows


def plot(table: pd.DataFrame, out_dir: str | Path, scale: Scale, root: str | Path):
    """Cosine vs ρ, one line per activation, early and late panels (per model)."""
    plt = figures._pyplot()
    fid = fidelity_table(points(scale), root)
    models = [m for m, _, _ in MODELS[scale.name]]
    fig, axes = plt.subplots(len(models), 2, figsize=(11.5, 4.2 * len(models)), squeeze=False)
    lines = list(dict.fromkeys(p.line for p in points(scale)))
    colors = {activation_label("relu"): "#1f77b4", activation_label("gelu"): "#d62728"}
    palette = ["#9467bd", "#8c564b", "#e377c2", "#2ca02c", "#17becf", "#ff7f0e"]
    for line in lines:
        if line not in colors:
            colors[line] = palette[len(colors) % len(palette)]
    shapes = ["s", "^", "v", "D", "P", "X", "*"]
    markers = {line: shapes[i % len(shapes)] for i, line in enumerate(lines[2:])}
    for i, model in enumerate(models):
        for j, stage in enumerate(("early", "late")):
            ax = axes[i, j]
            sub = fid[(fid["panel"] == model) & (fid["stage"] == stage)]
            epoch = float(sub["epoch"].iloc[0]) if len(sub) else math.nan
            for line in lines:
                means, los, his = [], [], []
                for rho in FIDELITY_RHOS:
                    vals = _cos(fid, line, rho, stage, model)
                    iv = verdicts.mean_interval(vals) if vals.size else C.NAN_INTERVAL
                    means.append(iv.estimate)
                    los.append(iv.lo if math.isfinite(iv.lo) else iv.estimate)
                    his.append(iv.hi if math.isfinite(iv.hi) else iv.estimate)
                dashed = "augmented" in line or "diminished" in line
                main = line in (activation_label("relu"), activation_label("gelu"))
                ax.plot(
                    FIDELITY_RHOS,
                    means,
                    marker=markers.get(line, "o"),
                    ms=4 if main else 5,
                    mfc=colors[line] if main else "none",
                    label=line,
                    color=colors[line],
                    linestyle="--" if dashed else "-",
                    linewidth=2.4 if main else 1.1,
                    zorder=3 if main else 2,
                )
                if main:  # the claim's two lines carry their 95 % bands; the rest stay legible
                    ax.fill_between(FIDELITY_RHOS, los, his, color=colors[line], alpha=0.15)
            ax.set_xscale("log")
            ax.set_ylim(
                min(0.0, float(np.nanmin(sub["hessian_cosine"])) - 0.05) if len(sub) else 0.0, 1.02
            )
            ax.set_xlabel("ρ (step length along u = g/‖g‖)")
            ax.set_ylabel("cos(ρHu, g(θ+ρu) − g(θ))")
            title = f"{model + ', ' if model else ''}{stage} (epoch {epoch:g})"
            ax.set_title(title, fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.axvline(PRIMARY_RHO, color="0.6", linewidth=0.8, linestyle=":")
            if j == 1:
                ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        "Mechanism: how well the autodiff Hessian product predicts a SAM step's gradient change\n"
        "(mean over seeds; bands: 95 % CI for ReLU and GELU; 1 = perfect)",
        fontsize=11,
    )
    fig.tight_layout()
    return figures.save(fig, Path(out_dir) / "mechanism")


EXPERIMENT = Experiment(
    name="mechanism",
    title="Mechanism: second-order fidelity, cosine vs ρ per activation",
    section="§4.3, §6.1, App. B.3",
    points=points,
    describe=describe,
    claims=claims,
    plot=plot,
)
