"""Fig. 4 (§4.4): augmented ReLU and diminished GELU under the p = 1 gradient penalty.

The paper: "augmented ReLU performs better than plain ReLU and nearly matches the performance of
GELU, while diminished GELU has poor performance similar to ReLU" (ImageNet, 5 seeds). The
augmented ReLU (eq. 15) is ReLU with an AD second derivative ``βφ(βx)``; the diminished GELU
(eq. 16) is GELU with AD second derivative 0. Under plain SGD each trains exactly like its
forward function (only first derivatives are used), so the comparison lives at ρ > 0.

Setup per scale (model and data as Fig. 2, whose ReLU and GELU runs are reused):

* ``quick``: CNN-BN on MNIST-1D, 3 seeds, ρ ∈ {0.3, 1}, augmented ReLU at β = 1 (the pilot's grid).
* ``small``: rescnn1d, 5 seeds, ρ ∈ {0.3, 1}, augmented ReLU at β = 1 and 3.
* ``paper``: CIFAR-10 and ImageNet, ρ ∈ {0.03, 0.1, 0.3}, β = 1.

Claims measured (both averaged over the ρ grid of the custom activations): augmented ReLU −
ReLU (paper: > 0) and GELU − diminished GELU (paper: > 0).
"""

from __future__ import annotations

from nmelab.experiments import claims as C
from nmelab.experiments import figures
from nmelab.experiments.fig2_penalty import (
    RHOS,
    panel_bases,
    panels,
    penalty_line,
    penalty_spec,
)
from nmelab.experiments.registry import Experiment, Point, Scale

CUSTOM_RHOS = {"quick": (0.3, 1.0), "small": (0.3, 1.0), "paper": (0.03, 0.1, 0.3)}
AUG_BETAS = {"quick": (1.0,), "small": (1.0, 3.0), "paper": (1.0,)}
DIM_LINE = penalty_line("diminished GELU")


def aug_line(beta: float) -> str:
    """Legend entry of the augmented-ReLU line at β."""
    return penalty_line(f"augmented ReLU (β={beta:g})")


def points(scale: Scale) -> list[Point]:
    """ReLU and GELU (shared with Fig. 2) and the two custom activations, per panel."""
    rhos = CUSTOM_RHOS[scale.name]
    ref_rhos = sorted(set(RHOS[scale.name]) | set(rhos))
    out = []
    for panel, base in panel_bases(scale, lr_check=False):
        for act, label in (("relu", "ReLU"), ("gelu", "GELU")):
            for rho in ref_rhos:
                out.append(Point(penalty_line(label), rho, penalty_spec(base, act, rho), panel))
        for rho in rhos:
            for beta in AUG_BETAS[scale.name]:
                spec = penalty_spec(base, "augmented_relu", rho, {"beta": beta})
                out.append(Point(aug_line(beta), rho, spec, panel))
            out.append(Point(DIM_LINE, rho, penalty_spec(base, "diminished_gelu", rho), panel))
    return out


def describe(scale: Scale) -> str:
    """The setup in one paragraph."""
    rhos = ", ".join(f"{r:g}" for r in CUSTOM_RHOS[scale.name])
    betas = ", ".join(f"{b:g}" for b in AUG_BETAS[scale.name])
    return (
        f"Model and data as Fig. 2. p = 1 gradient penalty at ρ ∈ {{{rhos}}} for augmented "
        f"ReLU (eq. 15, β ∈ {{{betas}}}) and diminished GELU (eq. 16); ReLU and GELU lines "
        f"are the Fig. 2 runs; {scale.num_seeds} seeds per point."
    )


def claims(table, scale: Scale, root=None) -> list[C.Claim]:
    """Augmented ReLU vs ReLU and GELU vs diminished GELU, per panel."""
    rhos = CUSTOM_RHOS[scale.name]
    grid = "{" + ", ".join(f"{r:g}" for r in rhos) + "}"
    out = []
    for panel in panels(scale, lr_check=False):
        suffix = f" [{panel}]" if panel else ""
        tag = f"-{panel}" if panel else ""
        relu, gelu = penalty_line("ReLU"), penalty_line("GELU")
        for beta in AUG_BETAS[scale.name]:
            aug = aug_line(beta)
            out.append(
                C.Claim(
                    key=f"fig4a{tag}" + ("" if beta == 1.0 else f"-beta{beta:g}"),
                    section="§4.4, Fig. 4",
                    statement=(
                        f"Under the gradient penalty, augmented ReLU (β = {beta:g}) beats plain "
                        f"ReLU and nearly matches GELU.{suffix}"
                    ),
                    effect_name=f"augmented ReLU − ReLU, mean over ρ ∈ {grid} (points)",
                    effect=C.mean_difference(table, aug, relu, rhos, panel),
                    direction=+1,
                    margin=C.ACCURACY_MARGIN,
                    details=[
                        (
                            "GELU − augmented ReLU, mean over the grid (paper: ≈ 0)",
                            C.mean_difference(table, gelu, aug, rhos, panel),
                        ),
                        *[
                            (
                                f"augmented ReLU − ReLU at ρ = {r:g}",
                                C.difference_at(table, aug, relu, r, panel),
                            )
                            for r in rhos
                        ],
                    ],
                    notes=C.missing_note(table)
                    + C.failure_notes(table, [(ln, r) for ln in (aug, relu) for r in rhos], panel),
                )
            )
        out.append(
            C.Claim(
                key=f"fig4b{tag}",
                section="§4.4, Fig. 4",
                statement=(
                    "Under the gradient penalty, diminished GELU does worse than GELU, like "
                    f"ReLU.{suffix}"
                ),
                effect_name=f"GELU − diminished GELU, mean over ρ ∈ {grid} (points)",
                effect=C.mean_difference(table, gelu, DIM_LINE, rhos, panel),
                direction=+1,
                margin=C.ACCURACY_MARGIN,
                details=[
                    (
                        "diminished GELU − ReLU, mean over the grid (paper: ≈ 0)",
                        C.mean_difference(table, DIM_LINE, relu, rhos, panel),
                    ),
                    *[
                        (
                            f"GELU − diminished GELU at ρ = {r:g}",
                            C.difference_at(table, gelu, DIM_LINE, r, panel),
                        )
                        for r in rhos
                    ],
                ],
                notes=C.missing_note(table)
                + C.failure_notes(table, [(ln, r) for ln in (gelu, DIM_LINE) for r in rhos], panel),
            )
        )
    return out


def plot(table, out_dir, scale: Scale, root=None):
    """Accuracy vs ρ for the four activations."""
    lines = [penalty_line("ReLU"), penalty_line("GELU")]
    lines += [aug_line(b) for b in AUG_BETAS[scale.name]] + [DIM_LINE]
    styles = {
        penalty_line("ReLU"): {"color": "#1f77b4"},
        penalty_line("GELU"): {"color": "#d62728"},
        DIM_LINE: {"color": "#ff7f0e", "linestyle": "--", "marker": "s"},
    }
    for i, b in enumerate(AUG_BETAS[scale.name]):
        styles[aug_line(b)] = {
            "color": ["#2ca02c", "#17becf"][i % 2],
            "linestyle": "--",
            "marker": "^",
        }
    return figures.line_figure(
        table,
        x_label="ρ (p = 1 gradient penalty)",
        title="Fig. 4: augmented ReLU and diminished GELU under the gradient penalty",
        out_base=f"{out_dir}/fig4",
        line_order=lines,
        style_fn=lambda line: styles.get(line, {}),
        panel_titles={"": "MNIST-1D", "lr/2": "MNIST-1D, half learning rate"},
    )


EXPERIMENT = Experiment(
    name="fig4",
    title="Fig. 4: augmented ReLU and diminished GELU vs ρ",
    section="§4.4, Fig. 4",
    points=points,
    describe=describe,
    claims=claims,
    plot=plot,
)
