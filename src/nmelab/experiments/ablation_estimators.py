"""§5.2, eq. 20-21: the estimator choices behind Fig. 5's penalties, as an ablation.

The paper estimates the GN-trace penalty with one label sampled from the model (eq. 20), passes
no gradient through the sampling, and says: "we find similar results if we pass gradients using
the straight-through estimator". Its update (eq. 21) then carries the NME of the sampled labels.
It draws one probe for the Hessian-trace penalty and says: "We experimented with 2 samples for
the Hessian Trace penalty but we found this did not affect the results". Both are claims of *no*
difference; we test them as such (:func:`nmelab.experiments.equivalence_verdict`).

Lines (GELU, the recipe of Fig. 5 at each scale, so the baselines are Fig. 5's own runs, trained
once): the GN-trace penalty (eq. 20, ``straight_through=False``), the same with the
straight-through estimator (targets ``onehot(ŷ) + p − sg(p)``,
:func:`nmelab.regularizers.trace_penalties.sampled_targets_for`), and the Hessian-trace penalty
with 1 and with 2 Hutchinson probes. (The GN-trace regularizer draws one label per example; the
paper's two-sample remark is about the Hessian-trace penalty, and that is what we vary.)

Setup per scale: ``quick`` MNIST-1D MLP 40-256-256-10, 3 seeds, σ² = 3e-3 (a smoke run of this
code at Fig. 5's largest σ², 1e-2, saw every Hessian-trace seed fail (diverge or collapse) with 1 and 2 probes:
an equivalence of two failures tests nothing, so ``quick`` uses Fig. 5's middle σ², chosen before
any run there);
``small`` 5 seeds, σ² ∈ {3e-3, 1e-2}; ``paper`` CIFAR-10 WRN-28-10, 5 seeds, σ² ∈ {1e-3, 3e-3}.

Pre-registered claims (secondary group: the paper's side remarks on how its Fig. 5 penalties are
estimated, not its findings), at the largest σ² of the grid, where an estimator's effect on the
penalty's gradient is largest; equivalence margin ±1 accuracy point (:data:`~nmelab.experiments.
claims.ACCURACY_MARGIN`, the precision at which the paper reports "similar"):

* ``est-st``: GN-trace straight-through − GN-trace inside ±1 point;
* ``est-2p``: Hessian-trace with 2 probes − with 1 probe inside ±1 point.
"""

from __future__ import annotations

import math

from nmelab.experiments import claims as C
from nmelab.experiments import figures, recipes
from nmelab.experiments.base import Experiment, Point, Scale, register
from nmelab.experiments.fig5_noise import RECIPE

__all__ = ["SIGMA2S", "VARIANTS"]

SIGMA2S = {"quick": (3e-3,), "small": (3e-3, 1e-2), "paper": (1e-3, 3e-3)}
VARIANTS: dict[str, tuple[str, dict]] = {
    "GN-trace, 1 label (eq. 20)": ("gn_trace", {}),
    "GN-trace, straight-through": ("gn_trace", {"straight_through": True}),
    "Hessian-trace, 1 probe": ("hessian_trace", {"num_probes": 1}),
    "Hessian-trace, 2 probes": ("hessian_trace", {"num_probes": 2}),
}
"""Legend entry -> (regularizer, its parameters besides σ). The first keeps the regularizer's
defaults so that it is Fig. 5's own GN-trace run."""

_CONTRASTS = (
    ("est-st", "GN-trace, straight-through", "GN-trace, 1 label (eq. 20)",
     "Passing gradients through the label sampling (straight-through) gives similar results."),
    ("est-2p", "Hessian-trace, 2 probes", "Hessian-trace, 1 probe",
     "Two Hutchinson probes instead of one do not affect the Hessian-trace penalty's results."),
)  # fmt: skip


def points(scale: Scale) -> list[Point]:
    """Every variant at every σ² of the scale."""
    recipe = RECIPE[scale.name]
    base = recipes.load(recipe, scale)
    out = []
    for line, (regularizer, params) in VARIANTS.items():
        for s2 in SIGMA2S[scale.name]:
            spec = recipes.training_specs(
                base,
                recipe,
                activation="gelu",
                regularizer=regularizer,
                regularizer_params={"sigma": math.sqrt(s2), **params},
            )
            out.append(Point(line, s2, spec))
    return out


def describe(scale: Scale) -> str:
    """The setup in one paragraph, from the recipe."""
    grid = ", ".join(f"{s:g}" for s in SIGMA2S[scale.name])
    model = recipes.setup_text(recipes.load(RECIPE[scale.name], scale))
    return (
        f"{model}, GELU; the GN-trace penalty (eq. 20: one label per example sampled from the "
        "model, no gradient through the sampling) and with the straight-through estimator; the "
        f"Hessian-trace penalty with 1 and 2 Hutchinson probes; σ² ∈ {{{grid}}}; "
        f"{scale.num_seeds} seeds per point."
    )


def claims(table, scale: Scale, root=None) -> list[C.Claim]:
    """The two equivalence claims at the largest σ²; the other σ² as details."""
    grid = SIGMA2S[scale.name]
    top = max(grid)
    out = []
    for key, line_a, line_b, statement in _CONTRASTS:
        out.append(
            C.Claim(
                key=key,
                section="§5.2, eq. 20-21",
                statement=statement,
                effect_name=f"{line_a} − {line_b} at σ² = {top:g} (points)",
                measured=C.measure(table, C.difference(line_a, line_b, top)),
                direction=0,
                margin=C.ACCURACY_MARGIN,
                group="secondary",
                details=[
                    (
                        f"{line_a} − {line_b} at σ² = {s:g}",
                        C.interval(table, C.difference(line_a, line_b, s)),
                    )
                    for s in grid
                    if s != top
                ],  # fmt: skip
            )
        )
    return out


def plot(table, out_dir, scale: Scale, root=None):
    """Accuracy vs σ² per estimator variant."""
    styles = {
        "GN-trace, straight-through": {"color": "#2ca02c", "linestyle": "--", "marker": "s"},
        "GN-trace, 1 label (eq. 20)": {"color": "#2ca02c", "marker": "o"},
        "Hessian-trace, 1 probe": {"color": "#d62728", "marker": "o"},
        "Hessian-trace, 2 probes": {"color": "#d62728", "linestyle": "--", "marker": "s"},
    }
    return figures.line_figure(
        table,
        x_label="σ² (penalty strength)",
        title="Eq. 20-21 ablation: GN-trace straight-through, Hessian-trace 1 vs 2 probes (GELU)",
        out_base=f"{out_dir}/estimators",
        xscale="log",
        line_order=list(VARIANTS),
        style_fn=lambda name: styles.get(name, {}),
    )


@register
def experiment() -> Experiment:
    """The estimator ablation."""
    return Experiment(
        name="estimators",
        title="Eq. 20-21: GN-trace straight-through and Hessian-trace probe count (ablation)",
        section="§5.2, eq. 20-21",
        points=points,
        describe=describe,
        claims=claims,
        plot=plot,
    )
