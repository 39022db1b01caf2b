"""§4.3: the NME diagonal grows sparse and spiky as β of β-GELU rises, on trained models.

The paper (§4.3, eq. 11-14): the diagonal of the NME is made of ``φ''`` terms only, and β-GELU's
``φ''`` is ``O(β)`` within ``1/β`` of 0 and exponentially small elsewhere, so "as β increases,
the probability of terms being non-zero becomes low, but when they are non-zero they are large -
giving a sparse, spiky structure to the NME, especially on the diagonal". We measure it on the
models the paper trains, at the end of training: one task per β trains every seed with SGD
(the scale's recipe, :func:`nmelab.train.train_and_evaluate`), restores the final weights and
measures, per seed, on a fixed probe batch (the first training examples, eval mode):

* the exact NME diagonal entries ``e_iᵀ NME e_i`` (one forward-over-forward pass each,
  :func:`nmelab.estimators.probes.quadratic_form_fn`) - of *every* parameter at ``quick`` and
  ``small``, of a uniform random sample of parameters at ``paper`` (a WRN-28-10 has 36 M);
  never Hutchinson's diagonal, whose noise makes any diagonal look dense
  (:func:`nmelab.estimators.diagonal_statistics`, its trap);
* their statistics (:func:`nmelab.estimators.diagonal_statistics`): the fraction of entries above
  ``1e-3 · max|d|``, the excess kurtosis, the share of ``Σ|d|`` in the top 1 % of entries - overall
  and per layer (with a sample, of the sampled entries);
* the NME's per-layer block norms ``‖NME_ab‖_F`` (:func:`nmelab.estimators.block_norms`: dense
  up to 4096 parameters, else probed).

Setup per scale (recipe ``configs/mnist1d_mlp.py`` with a narrower MLP, so the exact diagonal of
every parameter costs seconds):

* ``quick``: MLP 40-32-32-10 (2,698 parameters), 30 epochs, 3 seeds, β ∈ {1, 3, 10, 30}, probe
  batch 256;
* ``small``: MLP 40-64-64-10 (7,434 parameters), 60 epochs, 5 seeds, β ∈ {1, 2, 3, 5, 10, 30};
* ``paper``: CIFAR-10 WRN-28-10 (``configs/cifar10_wrn28_10.py``), 5 seeds, β ∈ {1, 3, 10, 30},
  65,536 sampled diagonal entries and probed block norms on 128 probe images.

Pre-registered claim (written before any run of this experiment), group ``analysis`` - the
paper's claim, but about the curvature's structure, not about accuracy, so it is neither in the
headline of training claims nor "ours":

* ``sparsity`` : the top-1 % mass share of ``|diag NME|`` at the largest β minus at β = 1, mean
  over seeds (paper: > 0). Margin **0.05**: a Gaussian diagonal's own top-1 % share is about
  0.036 (``0.01 · E[|z| | top 1 %] / E|z| = 0.01 · 2.89 / 0.80``), so a rise of less than 0.05
  would not turn a dense diagonal into a spiky one; 0.05 is the smallest rise that could.
* details: the kurtosis rise, the fall of the fraction above tolerance (paper: sparser), per β.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nmelab.experiments import claims as C
from nmelab.experiments import figures, recipes, verdicts
from nmelab.experiments.base import Experiment, Point, Scale, register
from nmelab.experiments.sweep import RunSpec, read_result

__all__ = ["BETAS", "SHARE_MARGIN", "STATISTICS", "measure", "run", "statistics_table", "validate"]

BETAS = {
    "quick": (1.0, 3.0, 10.0, 30.0),
    "small": (1.0, 2.0, 3.0, 5.0, 10.0, 30.0),
    "paper": (1.0, 3.0, 10.0, 30.0),
}
SHARE_MARGIN = 0.05
"""Smallest rise of the top-1 % mass share that counts (module docstring: a Gaussian's is 0.036)."""
TOLERANCE = 1e-3
"""Entries above ``TOLERANCE · max|d|`` count as non-negligible."""
STATISTICS = ("top_k_share", "kurtosis", "fraction_above")
"""The statistics kept per seed (:class:`nmelab.estimators.diagnostics.DiagonalStatistics`)."""

_SETUP: dict[str, dict[str, Any]] = {
    "quick": {
        "recipe": recipes.Recipe("mnist1d_mlp.py", "scale=quick"),
        "overrides": {"model_kwargs": {"features": [32, 32]}, "num_epochs": 30.0},
        "probe_batch_size": 256,
        "num_coordinates": None,
    },
    "small": {
        "recipe": recipes.Recipe("mnist1d_mlp.py", "scale=small"),
        "overrides": {"model_kwargs": {"features": [64, 64]}},
        "probe_batch_size": 256,
        "num_coordinates": None,
    },
    "paper": {
        "recipe": recipes.Recipe("cifar10_wrn28_10.py"),
        "overrides": {},
        "probe_batch_size": 128,
        "num_coordinates": 65536,
    },
}
_BLOCK_PROBES = 8
_RUNNER = "nmelab.experiments.sparsity:run"
_VALIDATOR = "nmelab.experiments.sparsity:validate"
_COST_FACTOR = 1.5
"""A task's cost relative to its training run (the measurement after it), for the plan."""


LINE = "SGD, β-GELU"


def _specs(scale: Scale, beta: float) -> tuple[RunSpec, ...]:
    """One task per training task of the recipe (all seeds vmapped for an MLP, else per seed)."""
    setup = _SETUP[scale.name]
    base = recipes.load(setup["recipe"], scale)
    trainings = recipes.training_specs(
        base,
        setup["recipe"],
        activation="beta_gelu",
        activation_params={"beta": beta},
        **setup["overrides"],
    )
    measurement = {
        "probe_batch_size": setup["probe_batch_size"],
        "num_coordinates": setup["num_coordinates"],
        "tolerance": TOLERANCE,
        "block_probes": _BLOCK_PROBES,
    }
    return tuple(
        RunSpec(
            _RUNNER,
            {"training": dict(t.config), **measurement},
            f"sparsity-{t.name}",
            cost=t.cost * _COST_FACTOR,
            validator=_VALIDATOR,
            recipe=t.recipe,
        )
        for t in trainings
    )


def measure(
    objective_fn: Callable[[Any], Any],
    params: Any,
    batch_stats: Any,
    batch: Any,
    *,
    key: Any,
    num_coordinates: int | None,
    tolerance: float = TOLERANCE,
    block_probes: int = _BLOCK_PROBES,
) -> dict[str, Any]:
    """The NME diagonal's statistics and the NME's layer block norms of one model at ``params``.

    Args:
      objective_fn: ``batch_stats -> Objective`` (eval mode for a BatchNorm model), e.g. a
        training program's ``eval_objective``; the entries are compiled once per ``objective_fn``
        and number of entries, so every seed of a task shares one compilation.
      params: one seed's parameters.
      batch_stats: its BatchNorm statistics (an empty dict without BatchNorm).
      batch: the probe batch ``(x, y)``.
      key: a ``jax.random`` key (the sampled coordinates and the probed block norms).
      num_coordinates: diagonal entries measured, a uniform sample without replacement;
        ``None``: every entry (``P`` forward-over-forward passes).
      tolerance: the relative threshold of ``fraction_above``.
      block_probes: probes per layer when the block norms are probed (``P > 4096``).

    Returns:
      ``{"overall": {statistic: value}, "layers": {layer: {statistic: value}},
      "block_names": [...], "block_norms": G×G list, "num_entries": n, "num_params": P}``.
    """
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from nmelab import curvature
    from nmelab.estimators import block_norms, diagonal_statistics
    from nmelab.estimators.diagnostics import param_groups

    num_params = int(ravel_pytree(params)[0].size)
    sample_key, block_key = jax.random.split(key)
    if num_coordinates is None or num_coordinates >= num_params:
        indices = np.arange(num_params)
    else:
        chosen = jax.random.choice(sample_key, num_params, (num_coordinates,), replace=False)
        indices = np.sort(np.asarray(chosen))
    entries_fn = _entries_fn(objective_fn, len(indices))
    values = np.asarray(entries_fn(params, batch_stats, batch, jnp.asarray(indices)), np.float64)
    layers = {}
    for name, layer_index in param_groups(params, "layer"):
        mask = np.isin(indices, layer_index)
        if mask.any():
            layers[name] = _stats(diagonal_statistics(values[mask], tol=tolerance))
    op = curvature.nme(objective_fn(batch_stats), params, batch)
    blocks = block_norms(op, key=block_key, num_probes=block_probes)
    return {
        "overall": _stats(diagonal_statistics(values, tol=tolerance)),
        "layers": layers,
        "block_names": list(blocks.names),
        "block_norms": np.asarray(blocks.norms).tolist(),
        "num_entries": int(values.size),
        "num_params": num_params,
    }


@functools.cache
def _entries_fn(objective_fn: Callable[[Any], Any], num_entries: int) -> Callable[..., Any]:
    """``(params, batch_stats, batch, indices) -> (e_iᵀ NME e_i)_i``, jitted once."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from nmelab import curvature
    from nmelab.estimators import probes as estimator_probes

    @jax.jit
    def entries(params: Any, batch_stats: Any, batch: Any, indices: jax.Array) -> jax.Array:
        flat, unravel = ravel_pytree(params)
        op = curvature.nme(objective_fn(batch_stats), params, batch)
        form = estimator_probes.quadratic_form_fn(op)

        def entry(i: jax.Array) -> jax.Array:
            return form(unravel(jnp.zeros(flat.size, flat.dtype).at[i].set(1)))

        size = min(estimator_probes.DEFAULT_UNIT_BATCH_SIZE, num_entries)
        return estimator_probes.chunked_map(entry, indices, num_entries, size)

    return entries


def _stats(stats: Any) -> dict[str, float]:
    return {name: float(getattr(stats, name)) for name in (*STATISTICS, "max_abs", "mean_abs")}


def run(config: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Sweep runner: train ``config["training"]`` in ``workdir/train``, then :func:`measure` it.

    Returns the trainer's summary (per-seed lists, so the task's seeds are ordinary rows of
    :func:`nmelab.experiments.load_results`) plus ``"sparsity"``: one :func:`measure` dict per
    seed, ``None`` for a diverged seed (its weights are not a trained model).
    """
    import jax

    from nmelab.train import build_run, config_from_dict, restore_state

    train_dir = Path(workdir) / "train"
    summary = recipes.train_runner(dict(config["training"]), str(train_dir))
    training = config_from_dict(config["training"])
    state = restore_state(training, train_dir)
    program_setup = build_run(training)
    x, y = program_setup.source.probe_batch(int(config["probe_batch_size"]))
    batch = (jax.device_put(x), jax.device_put(y))
    keys = jax.random.split(jax.random.PRNGKey(int(training.seed)), len(summary["seeds"]))
    per_seed = []
    for i, status in enumerate(summary["status"]):
        if status == "diverged":
            per_seed.append(None)
            continue
        params, stats = jax.tree.map(lambda leaf, i=i: leaf[i], (state.params, state.batch_stats))
        per_seed.append(
            measure(
                program_setup.eval_objective,
                params,
                stats,
                batch,
                key=keys[i],
                num_coordinates=config["num_coordinates"],
                tolerance=float(config["tolerance"]),
                block_probes=int(config["block_probes"]),
            )
        )
    return {**summary, "sparsity": per_seed}


def validate(workdir: str, summary: Mapping[str, Any]) -> None:
    """A stored result: a valid training summary and one sparsity entry per seed.

    Raises:
      ValueError: naming the field and what was wrong.
    """
    recipes.validate_training(workdir, summary)
    entries = summary.get("sparsity")
    if not isinstance(entries, list) or len(entries) != len(summary["seeds"]):
        raise ValueError(
            f"summary.sparsity: expected a list of {len(summary['seeds'])}, got {entries!r:.80}"
        )
    for entry in entries:
        if entry is not None and not all(k in entry.get("overall", {}) for k in STATISTICS):
            raise ValueError(f"summary.sparsity: expected {STATISTICS} per seed, got {entry!r:.80}")


def points(scale: Scale) -> list[Point]:
    """One point per β (its tasks hold every seed)."""
    return [Point(LINE, beta, _specs(scale, beta)) for beta in BETAS[scale.name]]


def describe(scale: Scale) -> str:
    """The setup in one paragraph, from the recipe."""
    setup = _SETUP[scale.name]
    config = {**recipes.load(setup["recipe"], scale), **setup["overrides"]}
    features = (config.get("model_kwargs") or {}).get("features")
    model = f" ({'-'.join(str(f) for f in features)} hidden units)" if features else ""
    betas = ", ".join(f"{b:g}" for b in BETAS[scale.name])
    entries = (
        "every exact diagonal entry"
        if setup["num_coordinates"] is None
        else f"{setup['num_coordinates']:,} exact diagonal entries sampled uniformly"
    )
    return (
        f"{recipes.setup_text(config)}{model}; β-GELU with β ∈ {{{betas}}}, SGD; at the end of "
        f"training, on the first {setup['probe_batch_size']} training examples (eval mode): "
        f"{entries} of the NME (e_iᵀ NME e_i), the fraction above {TOLERANCE:g}·max|d|, the "
        f"excess kurtosis and the top-1 % mass share, overall and per layer, and the NME's layer "
        f"block norms; {scale.num_seeds} seeds per β."
    )


def statistics_table(table: pd.DataFrame, scale: Scale, root: str | Path) -> pd.DataFrame:
    """One row per (β, seed) with the overall statistics (and ``layer`` rows per layer).

    Read from the stored results of the points ``table``; a missing or damaged task's seeds are
    absent, a diverged seed is left out.
    """
    rows = []
    for point in points(scale):
        for spec in point.specs:
            result = read_result(root, spec)
            if result is None:
                continue
            summary = result["summary"]
            for seed, entry in zip(summary["seeds"], summary["sparsity"], strict=True):
                if entry is None:
                    continue
                rows.append({"beta": point.x, "seed": seed, "layer": "", **entry["overall"]})
                for layer, stats in entry["layers"].items():
                    rows.append({"beta": point.x, "seed": seed, "layer": layer, **stats})
    columns = ["beta", "seed", "layer", *STATISTICS, "max_abs", "mean_abs"]
    return pd.DataFrame.from_records(rows, columns=columns)


def _values(stats: pd.DataFrame, beta: float, name: str) -> np.ndarray:
    mask = (stats["layer"] == "") & np.isclose(stats["beta"], beta)
    values = stats.loc[mask, name].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _rise(stats: pd.DataFrame, name: str, lo: float, hi: float) -> verdicts.Interval:
    groups = [_values(stats, hi, name), _values(stats, lo, name)]
    if any(len(g) == 0 for g in groups):
        return C.NAN_INTERVAL
    return verdicts.contrast(groups, [1.0, -1.0])


def sparsity_claims(
    stats: pd.DataFrame, betas: tuple[float, ...], num_missing: int
) -> list[C.Claim]:
    """The pre-registered claim from a statistics table (:func:`statistics_table`)."""
    lo, hi = min(betas), max(betas)
    share = _rise(stats, "top_k_share", lo, hi)
    measured = C.Measured(
        share,
        share,
        int(len(_values(stats, hi, "top_k_share"))) + int(len(_values(stats, lo, "top_k_share"))),
        num_missing=num_missing,
    )
    details = [
        (
            f"excess kurtosis, β = {hi:g} − β = {lo:g} (paper: > 0)",
            _rise(stats, "kurtosis", lo, hi),
        ),
        (
            f"fraction above {TOLERANCE:g}·max|d|, β = {hi:g} − β = {lo:g} (paper: < 0, sparser)",
            _rise(stats, "fraction_above", lo, hi),
        ),
    ]
    for beta in betas:
        values = _values(stats, beta, "top_k_share")
        details.append(
            (
                f"top-1 % share at β = {beta:g}",
                verdicts.mean_interval(values) if values.size else C.NAN_INTERVAL,
            )
        )
    return [
        C.Claim(
            key="sparsity",
            section="§4.3, eq. 11-14",
            statement=(
                "As β of β-GELU rises, the NME diagonal of the trained model becomes sparse and "
                "spiky: its absolute mass concentrates in few entries."
            ),
            effect_name=f"top-1 % share of Σ|diag NME|: β = {hi:g} − β = {lo:g}, end of training",
            measured=measured,
            direction=+1,
            margin=SHARE_MARGIN,
            group="analysis",
            unit="(share)",
            details=details,
            notes=[
                f"Margin {SHARE_MARGIN:g}: a Gaussian diagonal's own top-1 % share is about 0.036, "
                "so a smaller rise cannot turn a dense diagonal into a spiky one."
            ],
        )
    ]


def claims(table: pd.DataFrame, scale: Scale, root: str | Path) -> list[C.Claim]:
    """The top-1 % share rise from the smallest to the largest β (``analysis`` group)."""
    missing = sum(1 for p in points(scale) for s in p.specs if read_result(root, s) is None)
    return sparsity_claims(statistics_table(table, scale, root), BETAS[scale.name], missing)


def plot(table: pd.DataFrame, out_dir: str | Path, scale: Scale, root: str | Path) -> list[Path]:
    """Top-1 % share, kurtosis and fraction above tolerance vs β; per-layer block norms."""
    stats = statistics_table(table, scale, root)
    if stats.empty:
        return []
    plt = figures._pyplot()
    betas = BETAS[scale.name]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    labels = {
        "top_k_share": "top-1 % share of Σ|d|",
        "kurtosis": "excess kurtosis of d",
        "fraction_above": f"fraction |d| > {TOLERANCE:g}·max|d|",
    }
    layers = [name for name in dict.fromkeys(stats["layer"]) if name]
    for ax, name in zip(axes[:3], STATISTICS, strict=True):
        for layer, style in [("", {"color": "k", "linewidth": 2.2, "marker": "o"})] + [
            (layer, {"linewidth": 1.0, "marker": ".", "alpha": 0.8}) for layer in layers
        ]:
            sub = stats[stats["layer"] == layer]
            means = [sub.loc[np.isclose(sub["beta"], b), name].mean() for b in betas]
            ax.plot(betas, means, label=_layer_label(layer) or "all entries", **style)
        if name == "top_k_share":
            intervals = [verdicts.mean_interval(_values(stats, b, name)) for b in betas]
            ax.fill_between(
                betas,
                [i.lo if math.isfinite(i.lo) else i.estimate for i in intervals],
                [i.hi if math.isfinite(i.hi) else i.estimate for i in intervals],
                color="k",
                alpha=0.12,
            )
        ax.set_xscale("log")
        if name == "kurtosis":
            ax.set_yscale("symlog")
        ax.set_xlabel("β (β-GELU; β = 1 is GELU)")
        ax.set_ylabel(labels[name])
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[3]
    names: list[str] = []
    for beta in betas:
        names, norms = _block_diagonal(scale, root, beta)
        if names:
            ax.plot(range(len(norms)), norms, marker="o", label=f"β = {beta:g}")
    ax.set_xticks(range(len(names)), [_layer_label(n) for n in names], rotation=30, fontsize=7)
    ax.set_xlabel("layer (0: exactly zero, e.g. a linear head)")
    ax.set_ylabel("‖NME_ll‖_F, within-layer block (mean over seeds)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(
        "§4.3: the NME diagonal of trained β-GELU models as β rises (mean over seeds; band: 95 % "
        "CI of the overall top-1 % share)",
        fontsize=11,
    )
    fig.tight_layout()
    return figures.save(fig, Path(out_dir) / "sparsity")


def _layer_label(name: str) -> str:
    return name.replace("['", "").replace("']", "/").rstrip("/")


def _block_diagonal(scale: Scale, root: str | Path, beta: float) -> tuple[list[str], np.ndarray]:
    """The layer names and the within-layer block norms at β, mean over the seeds measured."""
    names, norms = [], []
    for point in points(scale):
        if not np.isclose(point.x, beta):
            continue
        for spec in point.specs:
            result = read_result(root, spec)
            for entry in (result or {}).get("summary", {}).get("sparsity", []):
                if entry is not None:
                    names = entry["block_names"]
                    norms.append(np.diag(np.asarray(entry["block_norms"], dtype=float)))
    return names, (np.mean(norms, axis=0) if norms else np.zeros(0))


@register
def experiment() -> Experiment:
    """§4.3 sparsity."""
    return Experiment(
        name="sparsity",
        title="§4.3: NME-diagonal sparsity and spikiness vs β on trained models",
        section="§4.3, eq. 11-14",
        points=points,
        describe=describe,
        claims=claims,
        plot=plot,
    )
