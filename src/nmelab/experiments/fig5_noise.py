"""Fig. 5 (§5.2): weight noise and its ablations against σ², plus the NME-trace penalty.

Eq. 19 splits weight noise ``E_ε[L(θ + ε)]``, ``ε ~ N(0, σ²I)``, into the loss, the Gauss-Newton
trace penalty ``σ² tr(GN)`` and the NME part. The paper compares weight noise, the Hessian-trace
penalty ``σ² tr(H)`` (one Hutchinson probe) and the GN-trace penalty (eq. 20, one sampled label):
"the generalization improvement of the Gauss-Newton Trace penalty is consistently greater than
either weight noise or Hessian Trace penalty", with "a stark contrast" at large σ². We add the
NME-trace penalty ``σ² tr(NME)`` (the part the GN penalty drops).

Setup per scale:

* ``quick``: MNIST-1D, MLP 40-256-256-10 with GELU (lr 0.2, 60 epochs), 3 seeds,
  σ² ∈ {0, 3e-3, 1e-2} (the pilot's grid without 1e-3, for time; σ² = 0 is SGD); one
  probe/sample each; the
  paper's three lines only (the NME-trace penalty, our addition, is left out for time).
* ``small``: 5 seeds, σ² ∈ {0, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2}, the Hessian- and NME-trace
  penalties with 5 probes (the reviewers asked for multi-sample estimates), 10k test examples.
* ``paper``: CIFAR-10 WRN-28-10, GELU, σ² ∈ {0, 1e-4, 3e-4, 1e-3, 3e-3}.

Claims measured, at the largest σ² of the grid (where the paper sees the contrast): GN-trace −
weight noise and GN-trace − Hessian-trace (paper: both > 0).
"""

from __future__ import annotations

import math

from nmelab.experiments import claims as C
from nmelab.experiments import figures, recipes
from nmelab.experiments.base import Experiment, Point, Scale, register
from nmelab.experiments.labels import METHOD_LABELS

__all__ = ["METHODS", "NUM_PROBES", "SIGMA2S", "line", "methods"]

SIGMA2S = {
    "quick": (0.0, 3e-3, 1e-2),
    "small": (0.0, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2),
    "paper": (0.0, 1e-4, 3e-4, 1e-3, 3e-3),
}
NUM_PROBES = {"quick": 1, "small": 5, "paper": 1}
RECIPE = {
    "quick": recipes.Recipe("mnist1d_mlp.py", "scale=quick"),
    "small": recipes.Recipe("mnist1d_mlp.py", "scale=small"),
    "paper": recipes.Recipe("cifar10_wrn28_10.py"),
}
METHODS = ("weight_noise", "hessian_trace", "gn_trace", "nme_trace")
PAPER_METHODS = METHODS[:3]
"""The paper's three lines; the NME-trace penalty is our addition (not at ``quick``, for time)."""


def methods(scale: Scale) -> tuple[str, ...]:
    """The lines at this scale."""
    return PAPER_METHODS if scale.name == "quick" else METHODS


def line(method: str) -> str:
    """Legend entry of a method."""
    return f"{METHOD_LABELS[method]}, GELU"


def regularizer_params(method: str, sigma2: float, scale: Scale) -> dict:
    """The regularizer's parameters at σ² (σ = √σ²)."""
    params: dict = {"sigma": math.sqrt(sigma2)}
    if method in ("hessian_trace", "nme_trace"):
        params["num_probes"] = NUM_PROBES[scale.name]
    return params


def points(scale: Scale) -> list[Point]:
    """Four methods over σ²; σ² = 0 is the shared SGD run."""
    recipe = RECIPE[scale.name]
    base = recipes.load(recipe, scale)
    sgd = recipes.training_specs(base, recipe, activation="gelu")
    out = []
    for method in methods(scale):
        for s2 in SIGMA2S[scale.name]:
            spec = (
                sgd
                if s2 == 0
                else recipes.training_specs(
                    base,
                    recipe,
                    activation="gelu",
                    regularizer=method,
                    regularizer_params=regularizer_params(method, s2, scale),
                )
            )
            out.append(Point(line(method), s2, spec))
    return out


def describe(scale: Scale) -> str:
    """The setup in one paragraph."""
    grid = ", ".join(f"{s:g}" for s in SIGMA2S[scale.name])
    model = recipes.setup_text(recipes.load(RECIPE[scale.name], scale)) + ", GELU"
    probes = NUM_PROBES[scale.name]
    nme = f" and NME-trace penalty ({probes} probe(s))" if "nme_trace" in methods(scale) else ""
    return (
        f"{model}; weight noise, Hessian-trace penalty ({probes} Hutchinson probe(s)), "
        f"GN-trace penalty (eq. 20, one sampled label per example){nme} at σ² ∈ {{{grid}}} "
        f"(σ² = 0: SGD); {scale.num_seeds} seeds per point."
    )


def claims(table, scale: Scale, root=None) -> list[C.Claim]:
    """GN-trace vs weight noise and vs Hessian-trace at the largest σ²."""
    grid = SIGMA2S[scale.name]
    top = max(grid)
    gn = line("gn_trace")
    out = []
    for key, other in (("fig5a", "weight_noise"), ("fig5b", "hessian_trace")):
        name = METHOD_LABELS[other]
        out.append(
            C.Claim(
                key=key,
                section="§5.2, Fig. 5",
                statement=f"The GN-trace penalty generalises better than {name}, most clearly at "
                "large σ².",
                effect_name=f"GN-trace − {name} at σ² = {top:g} (points)",
                measured=C.measure(table, C.difference(gn, line(other), top)),
                direction=+1,
                margin=C.ACCURACY_MARGIN,
                details=[
                    *[
                        (
                            f"GN-trace − {name} at σ² = {s:g}",
                            C.interval(table, C.difference(gn, line(other), s)),
                        )
                        for s in grid
                        if s > 0 and s != top
                    ],
                    (
                        f"GN-trace − SGD at σ² = {top:g} (paper: > 0)",
                        C.interval(table, C.difference(gn, gn, top, 0.0)),
                    ),
                    *[
                        (
                            f"NME-trace − GN-trace at σ² = {top:g} (not in the paper)",
                            C.interval(table, C.difference(line("nme_trace"), gn, top)),
                        )
                        for _ in ("nme_trace",)
                        if "nme_trace" in methods(scale)
                    ],
                ],
            )
        )
    return out


def plot(table, out_dir, scale: Scale, root=None):
    """Accuracy vs σ²."""
    styles = {line("nme_trace"): {"linestyle": ":", "marker": "d"}}
    return figures.line_figure(
        table,
        x_label="σ² (weight-noise variance / penalty strength)",
        title="Fig. 5: test accuracy vs σ², weight noise and its ablations (GELU)",
        out_base=f"{out_dir}/fig5",
        line_order=[line(m) for m in methods(scale)],
        style_fn=lambda name: styles.get(name, {}),
    )


@register
def experiment() -> Experiment:
    """Fig. 5."""
    return Experiment(
        name="fig5",
        title="Fig. 5: weight noise, Hessian-, GN- and NME-trace penalties vs σ²",
        section="§5.2, Fig. 5",
        points=points,
        describe=describe,
        claims=claims,
        plot=plot,
    )
