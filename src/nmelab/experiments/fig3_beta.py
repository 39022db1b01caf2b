"""Fig. 3 (§4.3): accuracy against β of β-GELU, for SGD and for the p = 1 penalty.

The paper: "accuracy suffers when training with gradient penalties as we increase β but is
unaffected for SGD" (penalty at ρ = 0.1, 5 seeds).

Setup per scale:

* ``quick``: MNIST-1D, MLP 40-256-256-10 (``configs/mnist1d_mlp.py``), 3 seeds,
  β ∈ {1, 3, 10, 30}; SGD, and the penalty at **ρ = 0.1, the paper's value (the primary claim)**
  and at ρ = 0.3; ReLU with SGD and with the penalty at ρ = 0.1 as reference lines.

  Why two values of ρ, stated before the runs: ρ is not scale-free (it multiplies a unit vector
  ``g/‖g‖`` whose effect depends on the model and data), so the paper's 0.1 need not mean the
  same on an MNIST-1D MLP. A pilot before this code ran this figure at ρ = 0.3 and saw the
  paper's direction. ρ = 0.3 is therefore *not* an independent test - it was chosen after seeing
  an effect there - and it is reported as a secondary claim; the verdict of record is at 0.1.
* ``small``: 5 seeds, β ∈ {1, 2, 3, 5, 10, 30}, a 10k-example test set, same two ρ.
* ``paper``: CIFAR-10 WRN-28-10, β ∈ {1, 3, 10, 30}, ρ = 0.1.

Pre-registered claims:

* ``fig3`` (primary): the accuracy drop from β = 1 to the largest β under the penalty minus the
  same drop under SGD (paper: > 0, margin 1 point);
* ``fig3-sgd`` (primary, equivalence): "unaffected for SGD": the SGD drop from β = 1 to the
  largest β inside ±1 point;
* ``fig3-relu`` (secondary; the paper's parenthesis "large β does *worse* than ReLU"): ReLU
  minus β-GELU at the largest β, both under the penalty at ρ = 0.1 (paper: > 0);
* ``fig3-rho0.3`` (secondary): the primary contrast at ρ = 0.3.
"""

from __future__ import annotations

from nmelab.experiments import claims as C
from nmelab.experiments import figures, recipes
from nmelab.experiments.base import Experiment, Point, Scale, register

__all__ = ["BETAS", "PENALTY_RHOS", "PRIMARY_RHO"]

BETAS = {
    "quick": (1.0, 3.0, 10.0, 30.0),
    "small": (1.0, 2.0, 3.0, 5.0, 10.0, 30.0),
    "paper": (1.0, 3.0, 10.0, 30.0),
}
PENALTY_RHOS = {"quick": (0.1, 0.3), "small": (0.1, 0.3), "paper": (0.1,)}
PRIMARY_RHO = 0.1
RECIPE = {
    "quick": recipes.Recipe("mnist1d_mlp.py", "scale=quick"),
    "small": recipes.Recipe("mnist1d_mlp.py", "scale=small"),
    "paper": recipes.Recipe("cifar10_wrn28_10.py"),
}

SGD_LINE = "SGD, β-GELU"
RELU_SGD_LINE = "SGD, ReLU (reference)"
RELU_PENALTY_LINE = f"penalty ρ={PRIMARY_RHO:g}, ReLU (reference)"


def penalty_line(rho: float) -> str:
    """Legend entry of the penalty line at ρ."""
    return f"penalty ρ={rho:g}, β-GELU"


def _penalty(rho: float) -> dict:
    return {"regularizer": "gradient_penalty", "regularizer_params": {"rho": rho, "p": 1}}


def points(scale: Scale) -> list[Point]:
    """SGD and penalty lines over β; the ReLU references repeat their run at every β."""
    recipe = RECIPE[scale.name]
    base = recipes.load(recipe, scale)
    relu_sgd = recipes.training_specs(base, recipe, activation="relu")
    relu_pen = recipes.training_specs(base, recipe, activation="relu", **_penalty(PRIMARY_RHO))
    out = []
    for beta in BETAS[scale.name]:
        act = {"activation": "beta_gelu", "activation_params": {"beta": beta}}
        out.append(Point(SGD_LINE, beta, recipes.training_specs(base, recipe, **act)))
        for rho in PENALTY_RHOS[scale.name]:
            spec = recipes.training_specs(base, recipe, **act, **_penalty(rho))
            out.append(Point(penalty_line(rho), beta, spec))
        out.append(Point(RELU_SGD_LINE, beta, relu_sgd))
        out.append(Point(RELU_PENALTY_LINE, beta, relu_pen))
    return out


def describe(scale: Scale) -> str:
    """The setup in one paragraph, from the recipe."""
    betas = ", ".join(f"{b:g}" for b in BETAS[scale.name])
    rhos = " and ".join(f"{r:g}" for r in PENALTY_RHOS[scale.name])
    return (
        f"{recipes.setup_text(recipes.load(RECIPE[scale.name], scale))}; β-GELU with "
        f"β ∈ {{{betas}}}; SGD and the p = 1 penalty at ρ = {rhos} (primary: ρ = "
        f"{PRIMARY_RHO:g}, the paper's value); ReLU with SGD and with the penalty at ρ = "
        f"{PRIMARY_RHO:g} as flat reference lines; {scale.num_seeds} seeds per point."
    )


def claims(table, scale: Scale, root=None) -> list[C.Claim]:
    """The drop-difference claims (primary ρ = 0.1), SGD's flatness, the ReLU reference."""
    betas = BETAS[scale.name]
    lo, hi = min(betas), max(betas)
    out = []
    for rho in PENALTY_RHOS[scale.name]:
        pen = penalty_line(rho)
        primary = rho == PRIMARY_RHO
        out.append(
            C.Claim(
                key="fig3" if primary else f"fig3-rho{rho:g}",
                section="§4.3, Fig. 3",
                statement=(
                    f"Under the gradient penalty (ρ = {rho:g}) accuracy falls as β grows; "
                    "under SGD it does not."
                ),
                effect_name=(
                    f"[acc(β={lo:g}) − acc(β={hi:g})] under the penalty minus the same under SGD "
                    "(points)"
                ),
                measured=C.measure(table, C.gain_difference(pen, SGD_LINE, hi, lo)),
                direction=+1,
                margin=C.ACCURACY_MARGIN,
                group="primary" if primary else "secondary",
                details=[
                    (
                        f"drop β={lo:g}→{hi:g} under the penalty (paper: > 0)",
                        C.interval(table, C.difference(pen, pen, lo, hi)),
                    ),
                    *[
                        (
                            f"penalty − SGD at β = {b:g}",
                            C.interval(table, C.difference(pen, SGD_LINE, b)),
                        )
                        for b in betas
                    ],
                ],
                notes=[]
                if primary
                else [
                    "Secondary: ρ = 0.3 is the pilot's value, chosen after the pilot saw the "
                    "paper's direction there; not an independent test. The verdict of record "
                    "is at ρ = 0.1."
                ],
            )
        )
    out.append(
        C.Claim(
            key="fig3-sgd",
            section="§4.3, Fig. 3",
            statement="Under SGD accuracy is unaffected by β.",
            effect_name=f"acc(β={lo:g}) − acc(β={hi:g}) under SGD (points)",
            measured=C.measure(table, C.difference(SGD_LINE, SGD_LINE, lo, hi)),
            direction=0,
            margin=C.ACCURACY_MARGIN,
        )
    )
    pen = penalty_line(PRIMARY_RHO)
    out.append(
        C.Claim(
            key="fig3-relu",
            section="§4.3, Fig. 3",
            statement=(
                f"Under the penalty (ρ = {PRIMARY_RHO:g}) β-GELU at large β does worse than ReLU "
                "(its second derivative at 0 is β, ReLU's is 0)."
            ),
            effect_name=f"ReLU − β-GELU(β={hi:g}), both under the penalty (points)",
            measured=C.measure(table, C.difference(RELU_PENALTY_LINE, pen, hi)),
            direction=+1,
            margin=C.ACCURACY_MARGIN,
            group="secondary",
            details=[
                (
                    "ReLU under SGD − ReLU under the penalty",
                    C.interval(table, C.difference(RELU_SGD_LINE, RELU_PENALTY_LINE, hi)),
                ),
            ],  # fmt: skip
        )
    )
    return out


def plot(table, out_dir, scale: Scale, root=None):
    """Accuracy vs β, with the ReLU reference lines (grey, flat)."""
    lines = [SGD_LINE] + [penalty_line(r) for r in PENALTY_RHOS[scale.name]]
    lines += [RELU_SGD_LINE, RELU_PENALTY_LINE]
    styles = {
        SGD_LINE: {"linestyle": "--"},
        RELU_SGD_LINE: {"color": "0.55", "linestyle": "--", "marker": ""},
        RELU_PENALTY_LINE: {"color": "0.3", "linestyle": ":", "marker": ""},
    }
    return figures.line_figure(
        table,
        x_label="β (β-GELU sharpness; β = 1 is GELU)",
        title="Fig. 3: test accuracy vs β, SGD and the p = 1 gradient penalty",
        out_base=f"{out_dir}/fig3",
        xscale="log",
        line_order=lines,
        style_fn=lambda line: styles.get(line, {}),
    )


@register
def experiment() -> Experiment:
    """Fig. 3."""
    return Experiment(
        name="fig3",
        title="Fig. 3: accuracy vs β, SGD and the gradient penalty",
        section="§4.3, Fig. 3",
        points=points,
        describe=describe,
        claims=claims,
        plot=plot,
    )
