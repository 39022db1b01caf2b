"""Fig. 2 (§4.1): test accuracy against ρ for the p = 1 gradient penalty, ReLU against GELU.

The paper: "performance is similar without regularization but with regularization test accuracy
increases for GELU until ρ = 0.1 and decreases for ReLU over a similar range" (ImageNet
ResNet-50, CIFAR-10 WRN-28-10, 5 seeds).

Pre-registered tests (fixed in this file before any run of this version):

* ``fig2`` (primary): the *gain* from ρ = 0 to ρ* of GELU minus that of ReLU,
  ``[GELU(ρ*) − GELU(0)] − [ReLU(ρ*) − ReLU(0)]``, paper: > 0, margin 1 point, with the two
  gains as required parts (GELU's > 0, ReLU's < 0; an intersection-union test, see
  :class:`~nmelab.experiments.claims.Part`). This is the paper's statement ("increases until
  ρ*", "decreases over a similar range"): a GELU curve that rises to ρ* and falls after it
  reproduces it; a GELU curve that merely falls more slowly than ReLU's does not (its own gain
  is negative), although the difference of gains alone would be positive. ρ* is
  :data:`RHO_STAR`: the paper's 0.1 at ``paper`` and ``small``; 0.3 at ``quick``, the middle
  of the band where ρ changes anything on MNIST-1D (a pilot before this code found
  ρ ≤ 0.03 changes nothing and ρ ≥ 1 collapses training) - chosen from the gradient-norm scale,
  not from any Fig. 2 outcome. The least-squares slopes over the grid are details only: the
  largest ρ dominates them.
* ``small``'s ρ* moved from 0.3 to the paper's 0.1 on 2026-12-02, before any ``small`` run, but
  after the ``quick`` runs had shown that ρ = 0.3 lowers both activations' accuracy on the
  CNN-BN (98.2 → 97.6-97.7 %). Because the move was informed by data, the old point is kept as
  the secondary claim ``fig2-rho0.3`` (:data:`SECONDARY_STARS`).
* ``fig2-rho0`` (primary): "similar without regularization", an equivalence claim:
  GELU − ReLU at ρ = 0 inside ±1 point.

Setup per scale (recipes in ``configs/``, shown in the report): ``quick`` the 1D CNN with
BatchNorm on MNIST-1D (``configs/mnist1d_cnn_bn.py``), ρ ∈ {0, 0.3, 1} (every point enters a
claim: 0 and ρ* here, 1 in Fig. 4 and 6; the full curve is the ``small`` scale's); ``small`` the residual
BN CNN on 2,000 training examples (``configs/mnist1d_rescnn.py``), ρ ∈ {0, 0.1, 0.3, 1} (the
half-learning-rate panel planned earlier was cut on 2026-12-02, before any ``small`` run, for the
2-hour budget); ``paper`` CIFAR-10 WRN-28-10 and ImageNet ResNet-50, ρ ∈ {0, 0.01, 0.03, 0.1,
0.3}.
"""

from __future__ import annotations

from nmelab.experiments import claims as C
from nmelab.experiments import figures, recipes
from nmelab.experiments.base import Experiment, Point, Scale, register

__all__ = [
    "RHO_STAR",
    "RHOS",
    "SECONDARY_STARS",
    "gain_claim",
    "panel_bases",
    "panels",
    "penalty_line",
    "penalty_spec",
]

ACTIVATIONS = (("relu", "ReLU"), ("gelu", "GELU"))

RHOS = {
    "quick": (0.0, 0.3, 1.0),
    "small": (0.0, 0.1, 0.3, 1.0),
    "paper": (0.0, 0.01, 0.03, 0.1, 0.3),
}

RHO_STAR = {"quick": 0.3, "small": 0.1, "paper": 0.1}
"""The pre-registered ρ* of the gain claim, per scale (module docstring)."""

SECONDARY_STARS = {"quick": (), "small": (0.3,), "paper": ()}
"""Earlier-registered ρ* kept as secondary gain claims after a move (module docstring)."""

PANELS = {
    "quick": (("", recipes.Recipe("mnist1d_cnn_bn.py", "scale=quick")),),
    "small": (("", recipes.Recipe("mnist1d_rescnn.py", "scale=small")),),
    "paper": (
        ("CIFAR-10", recipes.Recipe("cifar10_wrn28_10.py")),
        ("ImageNet", recipes.Recipe("imagenet_resnet50.py")),
    ),
}
"""Panel name and training recipe per scale (shared with Fig. 4 and Fig. 6)."""


def penalty_line(act_label: str) -> str:
    """Legend entry of the penalty line of an activation."""
    return f"penalty, {act_label}"


def panels(scale: Scale) -> list[str]:
    """The panel names at this scale."""
    return [p for p, _ in PANELS[scale.name]]


def panel_bases(scale: Scale) -> list[tuple[str, recipes.Recipe, dict]]:
    """``[(panel, recipe, base config)]`` at this scale."""
    return [(panel, recipe, recipes.load(recipe, scale)) for panel, recipe in PANELS[scale.name]]


def penalty_spec(base: dict, recipe: recipes.Recipe, activation: str, rho: float, params=None):
    """The p = 1 penalty run at ρ (plain SGD at ρ = 0: the shared baseline of Fig. 2, 4, 6)."""
    if rho == 0:
        return recipes.training_specs(base, recipe, activation=activation, activation_params=params)
    return recipes.training_specs(
        base,
        recipe,
        activation=activation,
        activation_params=params,
        regularizer="gradient_penalty",
        regularizer_params={"rho": rho, "p": 1},
    )


def points(scale: Scale) -> list[Point]:
    """ReLU and GELU penalty lines over the ρ grid, per panel."""
    out = []
    for panel, recipe, base in panel_bases(scale):
        for act, label in ACTIVATIONS:
            for rho in RHOS[scale.name]:
                spec = penalty_spec(base, recipe, act, rho)
                out.append(Point(penalty_line(label), rho, spec, panel))
    return out


def describe(scale: Scale) -> str:
    """The setup in one paragraph, from the recipes."""
    setups = "; ".join(
        f"{panel or 'model'}: {recipes.setup_text(base)}" for panel, _, base in panel_bases(scale)
    )
    rhos = ", ".join(f"{r:g}" for r in RHOS[scale.name])
    return (
        f"{setups}. p = 1 gradient penalty (eq. 7-8) at ρ ∈ {{{rhos}}} (ρ = 0: SGD); "
        f"pre-registered ρ* = {RHO_STAR[scale.name]:g}; {scale.num_seeds} seeds per point."
    )


def gain_claim(table, panel: str, star: float, rhos, *, key: str, group: str, note: str):
    """The gain claim at ρ* = ``star`` on ``panel`` (module docstring), with its parts and details."""
    relu, gelu = penalty_line("ReLU"), penalty_line("GELU")
    suffix = f" [{panel}]" if panel else ""
    return C.Claim(
        key=key,
        section="§4.1, Fig. 2",
        statement=(
            f"With the p = 1 gradient penalty, GELU gains accuracy from ρ = 0 up to "
            f"ρ* = {star:g} while ReLU loses over the same range.{suffix}"
        ),
        effect_name=f"[GELU(ρ*) − GELU(0)] − [ReLU(ρ*) − ReLU(0)], ρ* = {star:g} (points)",
        measured=C.measure(table, C.gain_difference(gelu, relu, 0.0, star), panel),
        direction=+1,
        margin=C.ACCURACY_MARGIN,
        group=group,
        parts=[
            C.Part(
                f"GELU gain, ρ = 0 → {star:g} (paper: > 0)",
                C.measure(table, C.difference(gelu, gelu, star, 0.0), panel),
                +1,
                C.ACCURACY_MARGIN,
            ),
            C.Part(
                f"ReLU gain, ρ = 0 → {star:g} (paper: < 0)",
                C.measure(table, C.difference(relu, relu, star, 0.0), panel),
                -1,
                C.ACCURACY_MARGIN,
            ),
        ],
        details=[
            ("OLS slope over the grid, GELU", C.interval(table, C.slope(gelu, rhos), panel)),
            ("OLS slope over the grid, ReLU", C.interval(table, C.slope(relu, rhos), panel)),
            *[
                (f"GELU − ReLU at ρ = {r:g}", C.interval(table, C.difference(gelu, relu, r), panel))
                for r in rhos
                if r > 0
            ],
        ],
        notes=[note],
    )


def claims(table, scale: Scale, root=None) -> list[C.Claim]:
    """The gain claim and the ρ = 0 equivalence claim, per panel (and any moved ρ*)."""
    out = []
    relu, gelu = penalty_line("ReLU"), penalty_line("GELU")
    star = RHO_STAR[scale.name]
    for panel in panels(scale):
        rhos = RHOS[scale.name]
        tag = f"-{panel}" if panel else ""
        suffix = f" [{panel}]" if panel else ""
        note = f"ρ* = {star:g} was fixed before the runs of this scale (module docstring)."
        out.append(
            gain_claim(table, panel, star, rhos, key="fig2" + tag, group="primary", note=note)
        )
        for old in SECONDARY_STARS[scale.name]:
            note = (
                f"ρ* = {old:g} was this scale's first registered point; it moved to {star:g} "
                "after the quick runs, before any run of this scale (module docstring)."
            )
            key = f"fig2-rho{old:g}{tag}"
            out.append(gain_claim(table, panel, old, rhos, key=key, group="secondary", note=note))
        out.append(
            C.Claim(
                key="fig2-rho0" + tag,
                section="§4.1, Fig. 2",
                statement=f"Without regularization ReLU and GELU perform similarly.{suffix}",
                effect_name="GELU − ReLU at ρ = 0 (points)",
                measured=C.measure(table, C.difference(gelu, relu, 0.0), panel),
                direction=0,
                margin=C.ACCURACY_MARGIN,
            )
        )
    return out


def plot(table, out_dir, scale: Scale, root=None):
    """Accuracy vs ρ, ReLU and GELU, with ρ* marked."""
    return figures.line_figure(
        table,
        x_label="ρ (p = 1 gradient penalty)",
        title="Fig. 2: test accuracy vs ρ, gradient penalty p = 1, ReLU vs GELU",
        out_base=f"{out_dir}/fig2",
        line_order=[penalty_line("ReLU"), penalty_line("GELU")],
        panel_titles={"": "MNIST-1D"},
        vline=RHO_STAR[scale.name],
    )


@register
def experiment() -> Experiment:
    """Fig. 2."""
    return Experiment(
        name="fig2",
        title="Fig. 2: accuracy vs ρ, p = 1 gradient penalty, ReLU vs GELU",
        section="§4.1, Fig. 2",
        points=points,
        describe=describe,
        claims=claims,
        plot=plot,
    )
