"""Fig. 2 (§4.1): test accuracy against ρ for the p = 1 gradient penalty, ReLU against GELU.

The paper: "performance is similar without regularization but with regularization test accuracy
increases for GELU until ρ = 0.1 and decreases for ReLU over a similar range" (ImageNet
ResNet-50, CIFAR-10 WRN-28-10, 5 seeds).

Setup per scale:

* ``quick``: MNIST-1D, the 1D CNN with BatchNorm (3 × 32 channels), 20 epochs, lr 0.1, 3 seeds,
  ρ ∈ {0, 0.1, 0.3, 1} (the pilot's design; ρ = 0 is plain SGD). About 3 min on 2 CPU cores.
* ``small``: the residual BN CNN ``rescnn1d`` with weight decay, 5 seeds, ρ ∈ {0, 0.1, 0.3, 1, 2},
  a 10k-example test set; plus ρ ∈ {0, 0.3, 1} at half the learning rate (the reviewers'
  question whether ReLU's failure is a learning-rate artefact).
* ``paper``: CIFAR-10 WRN-28-10 and ImageNet ResNet-50, ρ ∈ {0, 0.01, 0.03, 0.1, 0.3}.

Claim measured: the difference of the least-squares slopes of accuracy in ρ over the grid,
GELU − ReLU (the paper predicts > 0), with the two slopes and the ρ = 0 gap as details.
"""

from __future__ import annotations

from nmelab.experiments import claims as C
from nmelab.experiments import figures
from nmelab.experiments.registry import Experiment, Point, Scale, base_config, training_specs

ACTIVATIONS = (("relu", "ReLU"), ("gelu", "GELU"))

RHOS = {
    "quick": (0.0, 0.1, 0.3, 1.0),
    "small": (0.0, 0.1, 0.3, 1.0, 2.0),
    "paper": (0.0, 0.01, 0.03, 0.1, 0.3),
}

LR_CHECK_RHOS = (0.0, 0.3, 1.0)
"""The ρ grid of the half-learning-rate panel (``small``)."""


def panel_rhos(scale: Scale, panel: str) -> tuple[float, ...]:
    """The ρ grid of a panel."""
    return LR_CHECK_RHOS if panel == "lr/2" else RHOS[scale.name]


PANELS = {
    "quick": (("", "cnn_bn"),),
    "small": (("", "cnn_bn"), ("lr/2", "cnn_bn")),
    "paper": (("CIFAR-10", "cifar10"), ("ImageNet", "imagenet")),
}


def penalty_line(act_label: str) -> str:
    """Legend entry of the penalty line of an activation."""
    return f"penalty, {act_label}"


def panels(scale: Scale, lr_check: bool = True) -> list[str]:
    """The panel names at this scale (without the half-learning-rate check unless asked)."""
    return [p for p, _ in PANELS[scale.name] if lr_check or p != "lr/2"]


def panel_bases(scale: Scale, lr_check: bool = True) -> list[tuple[str, dict]]:
    """``[(panel, base config)]`` at this scale.

    Shared with Fig. 4 and Fig. 6, which leave out the half-learning-rate check.
    """
    out = []
    for panel, recipe in PANELS[scale.name]:
        if panel == "lr/2" and not lr_check:
            continue
        base = base_config(recipe, scale)
        if panel == "lr/2":
            base["learning_rate"] = base["learning_rate"] / 2
        out.append((panel, base))
    return out


def penalty_spec(base: dict, activation: str, rho: float, activation_params=None):
    """The p = 1 penalty run at ρ (plain SGD at ρ = 0)."""
    if rho == 0:
        return training_specs(base, activation=activation, activation_params=activation_params)
    return training_specs(
        base,
        activation=activation,
        activation_params=activation_params,
        regularizer="gradient_penalty",
        regularizer_params={"rho": rho, "p": 1},
    )


def points(scale: Scale) -> list[Point]:
    """ReLU and GELU penalty lines over the ρ grid, per panel."""
    out = []
    for panel, base in panel_bases(scale):
        for act, label in ACTIVATIONS:
            for rho in panel_rhos(scale, panel):
                out.append(Point(penalty_line(label), rho, penalty_spec(base, act, rho), panel))
    return out


def describe(scale: Scale) -> str:
    """The setup in one paragraph."""
    rhos = ", ".join(f"{r:g}" for r in RHOS[scale.name])
    model = {
        "quick": "MNIST-1D, 1D CNN with BatchNorm (3 conv layers × 32 channels, 20 epochs, lr 0.1)",
        "small": "MNIST-1D (10k test examples), residual BN CNN rescnn1d (weight decay 5e-4, "
        "30 epochs, lr 0.1; second panel at lr 0.05 with ρ ∈ {0, 0.3, 1})",
        "paper": "CIFAR-10 WRN-28-10 and ImageNet ResNet-50 (paper §3)",
    }[scale.name]
    return (
        f"{model}; p = 1 gradient penalty (eq. 7-8) at ρ ∈ {{{rhos}}} (ρ = 0: SGD); "
        f"{scale.num_seeds} seeds per point."
    )


def claims(table, scale: Scale, root=None) -> list[C.Claim]:
    """The slope-difference claim, one per panel."""
    out = []
    for panel in panels(scale):
        rhos = panel_rhos(scale, panel)
        relu, gelu = penalty_line("ReLU"), penalty_line("GELU")
        span = max(rhos) - min(rhos)
        suffix = f" [{panel}]" if panel else ""
        out.append(
            C.Claim(
                key="fig2" + (f"-{panel}" if panel else ""),
                section="§4.1, Fig. 2",
                statement=(
                    "With the p = 1 gradient penalty, test accuracy rises with ρ for GELU and falls "
                    "for ReLU (similar at ρ = 0)." + suffix
                ),
                effect_name="slope(GELU) − slope(ReLU) of accuracy in ρ (points per unit ρ, OLS "
                "over the grid)",
                effect=C.slope_difference(table, gelu, relu, rhos, panel),
                direction=+1,
                margin=C.ACCURACY_MARGIN / span,
                unit="points/ρ",
                details=[
                    ("slope, GELU (paper: > 0)", C.line_slope(table, gelu, rhos, panel)),
                    ("slope, ReLU (paper: < 0)", C.line_slope(table, relu, rhos, panel)),
                    (
                        "GELU − ReLU at ρ = 0 (paper: ≈ 0)",
                        C.difference_at(table, gelu, relu, 0.0, panel),
                    ),
                    *[
                        (f"GELU − ReLU at ρ = {r:g}", C.difference_at(table, gelu, relu, r, panel))
                        for r in rhos
                        if r > 0
                    ],
                ],
                notes=[
                    f"Margin: {C.ACCURACY_MARGIN:g} point over the grid's span of ρ "
                    f"({span:g}), i.e. {C.ACCURACY_MARGIN / span:.3g} points per unit ρ.",
                    *C.missing_note(table),
                    *C.failure_notes(table, [(ln, r) for ln in (gelu, relu) for r in rhos], panel),
                ],
            )
        )
    return out


def plot(table, out_dir, scale: Scale, root=None):
    """Accuracy vs ρ, ReLU and GELU."""
    return figures.line_figure(
        table,
        x_label="ρ (p = 1 gradient penalty)",
        title="Fig. 2: test accuracy vs ρ, gradient penalty p = 1, ReLU vs GELU",
        out_base=f"{out_dir}/fig2",
        line_order=[penalty_line("ReLU"), penalty_line("GELU")],
        panel_titles={"": "MNIST-1D", "lr/2": "MNIST-1D, half learning rate"},
    )


EXPERIMENT = Experiment(
    name="fig2",
    title="Fig. 2: accuracy vs ρ, p = 1 gradient penalty, ReLU vs GELU",
    section="§4.1, Fig. 2",
    points=points,
    describe=describe,
    claims=claims,
    plot=plot,
)
