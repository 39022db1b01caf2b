"""Fig. 1: the loss and the NME norm over two parameters of one hidden layer (exact, float64).

The model is a small MLP ``z = W₃ φ(W₂ φ(W₁ᵀx + b₁) + b₂) + b₃`` (2 inputs, two hidden layers of
3 units, 1 output) with MSE ``L = ½ (z − y)²`` on a single datapoint. Two parameters of the *first
hidden layer* are swept over a grid: ``a = W₁[0, 0]`` and ``b = W₁[0, 1]``, the weights from input
0 into hidden units 0 and 1; every other parameter is held fixed. At every grid point we compute:

* the loss ``L(a, b)``;
* ``‖NME_ab‖_F``: the **Frobenius** norm of the 2×2 NME of the loss as a function of ``(a, b)``,
  ``Σ_k (∂L/∂z_k) ∇²_{(a,b)} z_k`` (eq. 4 restricted to the swept parameters) - the quantity of
  the paper's figure, "the NME as a function of 2 parameters";
* ``‖NME‖_F`` over *all* parameters (a 25×25 matrix), for comparison;
* every hidden pre-activation ``h`` (its zero set is a region boundary, drawn as a line).

All matrices are dense (:func:`nmelab.curvature.dense.dense_nme`, ``jax.hessian`` of the model
outputs), vmapped over the grid, inside ``jax.enable_x64``.

What is exact here (and tested): a ReLU network is *linear* in the weights of any single layer
within a region (all other layers fixed), so the within-layer NME block is exactly 0 at every
point where AD is taken - the paper's "little NME information accessible pointwise". The loss is
piecewise quadratic in ``(a, b)``, with kinks on the boundaries. For β-GELU, ``f''`` is
concentrated within ``|h| ≲ 1/β`` of each boundary (eq. 14), and so is the NME. The trap: the
*full* ReLU NME is not zero - its cross-layer blocks (e.g. between ``W₁`` and ``W₂``) carry first
derivatives of the activation only (eq. 37) - so the figure must restrict to one layer.

The runner :func:`run` is a sweep task: ``run(config, workdir)`` writes ``landscape.npz`` and
returns a summary; :func:`load` reads the arrays back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nmelab.experiments.base import register

__all__ = ["default_config", "landscape", "load", "run", "validate"]

HIDDEN = (3, 3)
"""Hidden widths of the Fig. 1 MLP."""

ARRAYS_FILE = "landscape.npz"


def default_config(scale: str = "quick") -> dict[str, Any]:
    """The Fig. 1 task config at ``scale`` (only the grid resolution depends on it)."""
    resolution = {"quick": 121, "small": 201, "paper": 301}[scale]
    return {
        "experiment": "fig1",
        "resolution": resolution,
        "extent": 3.0,
        "activations": [["relu", {}], ["beta_gelu", {"beta": 1.0}], ["beta_gelu", {"beta": 4.0}]],
        "init_seed": 3,
        "x": [1.0, -0.6],
        "y": 0.5,
    }


def _init_params(seed: int) -> dict[str, np.ndarray]:
    """Fixed float64 parameters of the 2-3-3-1 MLP (standard normal, scaled by 1/√fan_in)."""
    rng = np.random.default_rng(seed)
    sizes = (2, *HIDDEN, 1)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        params[f"W{i}"] = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
        params[f"b{i}"] = 0.5 * rng.standard_normal(fan_out)
    return params


def landscape(
    activation_fn: Any,
    params: Mapping[str, Any],
    x: Any,
    y: float,
    a_values: Any,
    b_values: Any,
) -> dict[str, np.ndarray]:
    """Loss, NME norms and pre-activations over the ``(a, b)`` grid for one activation.

    Args:
      activation_fn: elementwise activation (e.g. ``nmelab.activations.get("relu")``).
      params: ``W1 (2, 3), b1, W2 (3, 3), b2, W3 (3, 1), b3``; ``W1[0, 0]`` and ``W1[0, 1]`` are
        replaced by the grid values.
      x: the datapoint, shape ``(2,)``.
      y: its target.
      a_values: 1-D grid of ``W1[0, 0]`` (x axis).
      b_values: 1-D grid of ``W1[0, 1]`` (y axis).

    Returns:
      ``loss``, ``nme_block`` (‖2×2 NME‖_F), ``nme_full`` (‖NME‖_F over all parameters) with
      shape ``(len(b_values), len(a_values))``, and ``preacts`` with shape
      ``(len(b_values), len(a_values), 6)`` (the 3 + 3 hidden pre-activations).
    """
    import jax
    import jax.numpy as jnp

    from nmelab.curvature.dense import dense_nme
    from nmelab.objective import Objective

    with jax.enable_x64(True):
        base = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in params.items()}
        xb = jnp.asarray(x, dtype=jnp.float64).reshape(1, 2)
        yb = jnp.asarray([[y]], dtype=jnp.float64)

        def forward(p, inputs):
            h1 = inputs @ p["W1"] + p["b1"]
            h2 = activation_fn(h1) @ p["W2"] + p["b2"]
            return activation_fn(h2) @ p["W3"] + p["b3"], jnp.concatenate([h1, h2], axis=-1)

        def with_ab(p, a, b):
            return {**p, "W1": p["W1"].at[0, 0].set(a).at[0, 1].set(b)}

        def full_apply(p, inputs):
            return forward(p, inputs)[0]

        full_objective = Objective(full_apply, loss="mse")

        def point(a, b):
            p = with_ab(base, a, b)
            block_objective = Objective(
                lambda ab, inputs: forward(with_ab(base, ab[0], ab[1]), inputs)[0], loss="mse"
            )
            batch = (xb, yb)
            loss = full_objective.value(p, batch)
            nme_block = dense_nme(block_objective, jnp.stack([a, b]), batch)
            nme_full = dense_nme(full_objective, p, batch)
            preacts = forward(p, xb)[1][0]
            return loss, jnp.linalg.norm(nme_block), jnp.linalg.norm(nme_full), preacts

        grid_b, grid_a = jnp.meshgrid(
            jnp.asarray(b_values, jnp.float64), jnp.asarray(a_values, jnp.float64), indexing="ij"
        )
        fn = jax.jit(jax.vmap(jax.vmap(point)))
        loss, nme_block, nme_full, preacts = fn(grid_a, grid_b)
        return {
            "loss": np.asarray(loss),
            "nme_block": np.asarray(nme_block),
            "nme_full": np.asarray(nme_full),
            "preacts": np.asarray(preacts),
        }


def _label(name: str, params: Mapping[str, Any]) -> str:
    return name if not params else f"{name}(β={params['beta']:g})"


SWEPT_UNITS = (0, 1)
"""The hidden units whose incoming weights are swept (``a`` feeds unit 0, ``b`` unit 1)."""


def boundary_concentration(
    nme: np.ndarray, preacts: np.ndarray, width: float, units: tuple[int, ...] = SWEPT_UNITS
) -> tuple[float, float]:
    """``(mass fraction, area fraction)`` of the grid points within ``width`` of a boundary.

    A point is "near a boundary" when the pre-activation of one of ``units`` (default: the two
    units whose weights are swept, whose boundaries are the straight lines of the figure)
    satisfies ``|h| < width``. The mass fraction is the share of ``Σ ‖NME‖`` carried by those
    points; the area fraction is their share of the grid. Mass ≫ area means the NME is
    concentrated at those boundaries.

    The trap: second-layer pre-activations stay near 0 over much of this small net's grid, so a
    band around *every* boundary covers almost the whole grid and measures nothing.
    """
    near = np.min(np.abs(preacts[..., list(units)]), axis=-1) < width
    total = float(np.sum(nme))
    mass = float(np.sum(nme[near]) / total) if total > 0 else float("nan")
    return mass, float(np.mean(near))


def run(config: Mapping[str, Any], workdir: str) -> dict[str, Any]:
    """Sweep-task runner: compute every activation's landscape, save ``landscape.npz``.

    Returns:
      A summary: per activation, the maximum of ``‖NME_ab‖_F`` over the grid, and for β-GELU
      the boundary concentration within ``|h| < 1/β`` (:func:`boundary_concentration`).
    """
    from nmelab import activations

    params = _init_params(int(config["init_seed"]))
    extent = float(config["extent"])
    axis = np.linspace(-extent, extent, int(config["resolution"]))
    arrays: dict[str, np.ndarray] = {"a_values": axis, "b_values": axis}
    per_activation = []
    for name, act_params in config["activations"]:
        act = activations.get(name, **act_params)
        out = landscape(act, params, config["x"], float(config["y"]), axis, axis)
        label = _label(name, act_params)
        key = name + "".join(f"_{k}{v:g}" for k, v in sorted(act_params.items()))
        for field, value in out.items():
            arrays[f"{key}__{field}"] = value
        entry = {
            "key": key,
            "label": label,
            "activation": name,
            "activation_params": dict(act_params),
            "loss_min": float(out["loss"].min()),
            "loss_max": float(out["loss"].max()),
            "nme_block_max": float(out["nme_block"].max()),
            "nme_full_max": float(out["nme_full"].max()),
        }
        if "beta" in act_params:
            width = 1.0 / act_params["beta"]
            mass, area = boundary_concentration(out["nme_block"], out["preacts"], width)
            entry.update(band_width=width, band_mass=mass, band_area=area)
        per_activation.append(entry)
    np.savez_compressed(Path(workdir) / ARRAYS_FILE, **arrays)
    return {
        "experiment": "fig1",
        "activations": per_activation,
        "x": config["x"],
        "y": config["y"],
        "resolution": int(config["resolution"]),
    }


def load(workdir: str | Path) -> dict[str, np.ndarray]:
    """The arrays saved by :func:`run` (keys ``a_values``, ``b_values``, ``<act>__<field>``)."""
    with np.load(Path(workdir) / ARRAYS_FILE) as data:
        return {k: data[k] for k in data.files}


# --------------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------------


def _describe(scale: Any) -> str:
    config = default_config(scale.name)
    n = config["resolution"]
    return (
        f"Exact float64 computation on a {n}×{n} grid of (a, b) = (W₁[0,0], W₁[0,1]) ∈ "
        f"[−{config['extent']:g}, {config['extent']:g}]² for a 2-3-3-1 MLP, MSE on the point "
        f"x = {tuple(config['x'])}, y = {config['y']:g}; ReLU and β-GELU (β = 1, 4). "
        "NME norms are Frobenius norms of dense matrices."
    )


def validate(workdir: str, summary: Mapping[str, Any]) -> None:
    """Check a stored result: its summary fields and a readable, complete ``landscape.npz``.

    Raises:
      ValueError: naming the field or file and what was wrong.
    """
    acts = summary.get("activations")
    if not isinstance(acts, list) or not all(isinstance(a, dict) and "key" in a for a in acts):
        raise ValueError(f"summary.activations: expected a list of objects, got {acts!r:.80}")
    try:
        arrays = load(workdir)
    except Exception as err:  # noqa: BLE001 - any failure to read the archive means damaged
        raise ValueError(f"{Path(workdir) / ARRAYS_FILE}: unreadable ({err})") from err
    needed = {"a_values", "b_values"} | {f"{a['key']}__nme_block" for a in acts}
    if not needed <= set(arrays):
        missing = sorted(needed - set(arrays))
        raise ValueError(f"{Path(workdir) / ARRAYS_FILE}: missing arrays {missing}")


def _claims(summary: Any) -> list:
    from nmelab.experiments import claims as C
    from nmelab.experiments import verdicts

    acts = {a["key"]: a for a in summary["activations"]}
    relu = acts["relu"]
    sharp = max(
        (a for a in acts.values() if "band_mass" in a), key=lambda a: a["activation_params"]["beta"]
    )
    beta = sharp["activation_params"]["beta"]
    concentration = sharp["band_mass"] - sharp["band_area"]
    others = [a for a in acts.values() if "band_mass" in a and a is not sharp]
    return [
        C.Claim(
            key="fig1a",
            section="§4.3, Fig. 1",
            statement=(
                "For ReLU, the NME of the loss restricted to two weights of one layer is 0 at "
                "every point (the loss is piecewise quadratic there); its information sits on "
                "the region boundaries."
            ),
            effect_name="max over the grid of ‖NME_ab‖_F, ReLU (exact)",
            measured=C.exact_measure(relu["nme_block_max"]),
            direction=0,
            margin=1e-12,
            group="identity",
            unit="",
            details=[
                (
                    "max ‖NME‖_F over all 25 parameters, ReLU (cross-layer blocks; not 0)",
                    verdicts.exact(relu["nme_full_max"]),
                )
            ],
            rule_text="exact: reproduced if the maximum is below 1e-12 (equivalence with margin "
            "1e-12), not reproduced otherwise",
            notes=["Exact computation (dense float64), no seeds."],
        ),
        C.Claim(
            key="fig1b",
            section="§4.3, Fig. 1",
            statement=(
                f"For β-GELU the NME is concentrated near the region boundaries, within "
                f"about 1/β (shown for β = {beta:g})."
            ),
            effect_name=(
                f"share of Σ‖NME_ab‖ within |h| < 1/β of the swept units' boundaries minus the "
                f"share of the grid there, β = {beta:g} (exact)"
            ),
            measured=C.exact_measure(concentration),
            direction=+1,
            margin=0.2,
            group="identity",
            unit="",
            details=[
                ("NME mass share near boundaries", verdicts.exact(sharp["band_mass"])),
                ("grid area share near boundaries", verdicts.exact(sharp["band_area"])),
                *[
                    (
                        f"mass − area share at β = {a['activation_params']['beta']:g} "
                        f"(|h| < {a['band_width']:g})",
                        verdicts.exact(a["band_mass"] - a["band_area"]),
                    )
                    for a in others
                ],
            ],
            rule_text=(
                "exact: reproduced if the NME's share near the boundaries exceeds their share of "
                "the grid by at least 0.2, not reproduced otherwise"
            ),
            notes=["Exact computation, no seeds."],
        ),
    ]


@register
def experiment():
    """Fig. 1."""
    from nmelab.experiments import figures
    from nmelab.experiments.exact import exact_experiment

    return exact_experiment(
        name="fig1",
        title="Fig. 1: loss and NME-norm landscapes (exact)",
        section="§4.3, Fig. 1",
        module="nmelab.experiments.fig1_landscape",
        config_fn=default_config,
        cost=15.0,
        describe=_describe,
        claims_fn=_claims,
        claim_keys=("fig1a", "fig1b"),
        figure_fn=figures.landscape_figure,
        load_fn=load,
    )
