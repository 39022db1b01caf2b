"""Second-order fidelity: how well ``ρ H u`` predicts the gradient change that a finite step sees.

The paper's mechanism (Sec. 4.3, 6.1 and App. B.3): an explicit gradient penalty (eq. 8) uses the
autodiff Hessian product ``H g`` - pointwise second-order information - while SAM (eq. 42) takes a
finite step and uses the gradient there, ``g(θ + ρ g/‖g‖)``. The two agree to first order in ρ:

    Δg(ρ) = g(θ + ρu) − g(θ) = ρ H u + ½ ρ² ∇³L[u, u] + O(ρ³)      (u = g/‖g‖, H = GN + NME, eq. 2)

For a smooth network (GELU) the remainder is small and ``ρ H u`` tracks ``Δg``. For a ReLU network
the loss is only piecewise smooth: the autodiff ``H u`` sees ``ReLU'' = 0`` and so misses every
kink that the step ``ρu`` crosses, while ``Δg`` integrates over them. Where the NME is sparse and
spiky the pointwise product and the finite change part ways even at small ρ.

:func:`second_order_fidelity` measures this, for the whole model and layer by layer: the cosine and
norm ratio between ``Δg`` and each predictor ``ρ H u``, ``ρ GN u``, ``ρ NME u``, and the relative
residual ``‖Δg − ρ A u‖ / ‖Δg‖``. :func:`fidelity_summary` flattens a result into a dict of floats
for a training log; :func:`fidelity_rows` into table rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nmelab import _tree, validation
from nmelab.curvature.operator import check_inputs
from nmelab.curvature.split import split_product
from nmelab.estimators import loops, probes
from nmelab.objective import Objective
from nmelab.types import Batch, Key, Params, PyTree

PREDICTORS = ("hessian", "gauss_newton", "nme")
"""The three predictors of ``Δg``: ``ρ H u``, ``ρ GN u`` and ``ρ NME u`` (``H = GN + NME``)."""

METRICS = ("cosine", "norm_ratio", "residual", "predicted_norm")
"""The fields of :class:`PredictorFidelity`."""

_DIRECTIONS = ("gradient", "random")


@dataclasses.dataclass(frozen=True)
class PredictorFidelity:
    """How well one predictor ``ρ A u`` (``A`` = H, GN or NME) matches ``Δg``; arrays ``(R,)``.

    Attributes:
      cosine: ``⟨A u, Δg⟩ / (‖A u‖ ‖Δg‖)``; 0 where either vector is zero.
      norm_ratio: ``‖Δg‖ / ‖ρ A u‖``; ``inf`` where ``A u = 0`` (e.g. the NME of a linear model).
      residual: ``‖Δg − ρ A u‖ / ‖Δg‖``; 0 for a perfect prediction, 1 for ``A u = 0``.
      predicted_norm: ``‖ρ A u‖``.
    """

    cosine: jax.Array
    norm_ratio: jax.Array
    residual: jax.Array
    predicted_norm: jax.Array


@dataclasses.dataclass(frozen=True)
class BlockFidelity:
    """The three predictors on one parameter block (a layer); arrays of shape ``(R,)``.

    Attributes:
      hessian: ``ρ H u`` against ``Δg`` restricted to the block.
      gauss_newton: ``ρ GN u`` against ``Δg``.
      nme: ``ρ NME u`` against ``Δg``.
      delta_norm: ``‖Δg‖`` on the block.
    """

    hessian: PredictorFidelity
    gauss_newton: PredictorFidelity
    nme: PredictorFidelity
    delta_norm: jax.Array


@dataclasses.dataclass(frozen=True)
class FidelityResult:
    """The output of :func:`second_order_fidelity`; every array has a leading ρ axis of size ``R``.

    A pytree (it passes through ``jit``/``vmap``). ``result.hessian.cosine[i]`` is the whole-model
    cosine at ``result.rho[i]``; ``result.layers["0"].nme.residual`` the same for one layer.

    Attributes:
      rho: the step lengths, shape ``(R,)``, in the params' dtype.
      hessian: ``ρ H u`` against ``Δg`` over all parameters.
      gauss_newton: ``ρ GN u`` against ``Δg``.
      nme: ``ρ NME u`` against ``Δg``.
      delta_norm: ``‖Δg‖`` over all parameters.
      rounding_floor: ``eps · ‖g(θ)‖ / ‖Δg‖``, the order of magnitude of the relative rounding error
        of ``Δg`` (a difference of two gradients). Residuals near or below it are noise: in
        float32 with small ρ this is the first thing to check.
      layers: ``layer name -> BlockFidelity``; see :func:`nmelab._tree.layer_names` for the grouping.
    """

    rho: jax.Array
    hessian: PredictorFidelity
    gauss_newton: PredictorFidelity
    nme: PredictorFidelity
    delta_norm: jax.Array
    rounding_floor: jax.Array
    layers: dict[str, BlockFidelity]


for _cls in (PredictorFidelity, BlockFidelity, FidelityResult):
    jax.tree_util.register_dataclass(
        _cls, data_fields=[f.name for f in dataclasses.fields(_cls)], meta_fields=[]
    )


def _safe_div(num: jax.Array, den: jax.Array, zero_value: float) -> jax.Array:
    """``num / den`` with ``zero_value`` where ``den == 0``."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), zero_value)


def _leaf_sums(rhos, delta_leaf, product_leaf):
    """Sums over one leaf, for every ρ (axis 0) and predictor (axis 1 of ``(R, 3)`` outputs).

    Returns ``(‖Δg‖² (R,), ‖Au‖² (3,), ⟨Au, Δg⟩ (R, 3), ‖Δg − ρAu‖² (R, 3))``. The residual is
    summed directly, not expanded as ``‖Δg‖² − 2ρ⟨Au, Δg⟩ + ρ²‖Au‖²``, which would cancel to
    ``sqrt(eps)`` relative accuracy exactly where the prediction is good.
    """
    d = jnp.reshape(delta_leaf, (rhos.shape[0], -1))  # (R, n)
    a = jnp.reshape(product_leaf, (len(PREDICTORS), -1))  # (3, n)
    dd = jnp.sum(d * d, axis=1)
    aa = jnp.sum(a * a, axis=1)
    ad = d @ a.T
    rr = jnp.sum(jnp.square(d[:, None, :] - rhos[:, None, None] * a[None]), axis=2)
    return dd, aa, ad, rr


def _metrics(rhos, dd, aa, ad, rr) -> dict[str, Any]:
    """Metrics from block sums: ``dd (B, R)``, ``aa (B, 3)``, ``ad (B, R, 3)``, ``rr (B, R, 3)``."""
    delta_norm = jnp.sqrt(dd)[..., None]  # (B, R, 1)
    a_norm = jnp.sqrt(aa)[:, None, :]  # (B, 1, 3)
    return {
        "cosine": _safe_div(ad, a_norm * delta_norm, 0.0),
        "norm_ratio": delta_norm / (rhos[None, :, None] * a_norm),
        "residual": jnp.sqrt(rr) / delta_norm,
        "predicted_norm": rhos[None, :, None] * a_norm * jnp.ones_like(delta_norm),
    }


def _block(metrics: dict[str, jax.Array], delta_norm: jax.Array, b: int) -> BlockFidelity:
    predictors = {
        name: PredictorFidelity(**{m: metrics[m][b, :, i] for m in METRICS})
        for i, name in enumerate(PREDICTORS)
    }
    return BlockFidelity(**predictors, delta_norm=delta_norm[b])


def _gradient(objective: Objective, context: tuple) -> PyTree:
    params, batch = context
    return jax.grad(objective.value)(params, batch)


def _gradient_change(objective: Objective, context: tuple, rho: jax.Array) -> PyTree:
    """``Δg(ρ) = g(θ + ρu) − g(θ)``."""
    params, batch, u, g = context
    shifted = jax.tree.map(lambda p, v: p + (rho * v).astype(p.dtype), params, u)
    return jax.tree.map(jnp.subtract, _gradient(objective, (shifted, batch)), g)


@loops.driver(static_argnums=(0, 5))
def _fidelity(
    objective: Objective,
    params: Params,
    batch: Batch,
    rhos: jax.Array,
    direction: PyTree,
    mode: str,
    python: bool,
) -> FidelityResult:
    g = loops.call(_gradient, objective, (params, batch), python)
    if mode == "gradient":
        u, _ = _tree.tree_normalize(g)
    elif mode == "random":
        u, _ = _tree.tree_normalize(probes.sample_probe(direction, params, "rademacher"))
    else:
        u, _ = _tree.tree_normalize(direction)

    # One joint forward-over-reverse product gives H u, GN u and NME u (independent of ρ) ...
    products = split_product(objective, params, batch, u)

    # ... and one gradient per ρ: batched with vmap, or one after another in the Python loop
    # (a vmap over shifted conv kernels is a grouped convolution, slow on XLA:CPU).
    num_rhos = rhos.shape[0]
    deltas = loops.map_chunks(
        _gradient_change,
        objective,
        (params, batch, u, g),
        rhos,
        num_rhos,
        1 if python else num_rhos,
        python,
    )

    # Per-leaf sums, stacked over leaves, then summed into blocks: [whole model, layer 1, ...].
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *products)
    sums = [
        _leaf_sums(rhos, d, a)
        for d, a in zip(jax.tree.leaves(deltas), jax.tree.leaves(stacked), strict=True)
    ]
    groups = _tree.layer_names(params)
    names = list(dict.fromkeys(groups))
    membership = np.array([[1.0] * len(groups)] + [[g == n for g in groups] for n in names])
    dd, aa, ad, rr = (
        jnp.tensordot(jnp.asarray(membership, dtype=rhos.dtype), jnp.stack(parts), axes=1)
        for parts in zip(*sums, strict=True)
    )
    metrics = _metrics(rhos, dd, aa, ad, rr)
    delta_norm = jnp.sqrt(dd)
    whole = _block(metrics, delta_norm, 0)
    eps = jnp.finfo(rhos.dtype).eps
    return FidelityResult(
        rho=rhos,
        hessian=whole.hessian,
        gauss_newton=whole.gauss_newton,
        nme=whole.nme,
        delta_norm=whole.delta_norm,
        rounding_floor=eps * _tree.tree_norm(g) / whole.delta_norm,
        layers={name: _block(metrics, delta_norm, b + 1) for b, name in enumerate(names)},
    )


def _check_rho(rho: Any, dtype: Any) -> jax.Array:
    """Return ``rho`` as a 1-D array in ``dtype``; check values where they are concrete."""
    try:
        values = np.asarray(rho, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        values = None  # traced under jit: only the shape can be checked
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"rho must be a float or a 1-D sequence of floats, got {type(rho).__name__}"
        ) from err
    shape = jnp.shape(rho) if values is None else values.shape
    if len(shape) > 1:
        raise ValueError(f"rho must be a float or a 1-D sequence of floats, got shape {shape}")
    if shape == (0,):
        raise ValueError("rho must hold at least one value, got an empty sequence")
    if values is None:
        return jnp.atleast_1d(jnp.asarray(rho, dtype=dtype))
    values = np.atleast_1d(values)
    cast = values.astype(dtype)
    bad = ~np.isfinite(values) | (values <= 0) | (cast <= 0)
    if bad.any():
        raise ValueError(
            f"rho must be finite and > 0 (also after casting to the params' dtype "
            f"{np.dtype(dtype).name}), got {values[bad].tolist()}"
        )
    return jnp.asarray(cast)


def second_order_fidelity(
    objective: Objective,
    params: Params,
    batch: Batch,
    rho: float | Sequence[float] | jax.Array,
    direction: str | PyTree = "gradient",
    *,
    key: Key | None = None,
    loop: str = "auto",
) -> FidelityResult:
    """Compare the autodiff prediction ``ρ H u`` with the gradient change ``Δg`` of a step ``ρu``.

    With ``g = ∇L(θ)`` and a unit direction ``u``::

        Δg(ρ) = g(θ + ρu) − g(θ) = ρ H u + O(ρ²)          H = GN + NME   (paper eq. 2)

    For ``u = g/‖g‖`` the left side is what SAM's second gradient (eq. 42) sees and ``ρ H u`` is the
    Hessian-gradient product of the explicit gradient penalty (eq. 8). For each ρ the result holds
    the cosine, the norm ratio ``‖Δg‖/‖ρAu‖`` and the residual ``‖Δg − ρAu‖/‖Δg‖`` of each
    predictor ``A ∈ {H, GN, NME}``, over all parameters and per layer (:func:`nmelab._tree.layer_names`).

    What to expect: for a loss quadratic in θ the prediction is exact at every ρ (cosine 1, residual
    at rounding level). For a smooth (GELU, tanh) network the residual falls like ``O(ρ)``. For a
    ReLU network ``H u`` is blind to the kinks: once ``ρu`` moves some unit's pre-activation across
    0, ``Δg`` jumps and the cosine drops below 1, however small ρ is relative to the rest of the
    landscape (paper Sec. 6.1 and App. B.3; the pilot measured cosine 0.53 at ρ = 0.01 late in
    training).

    Cost: one gradient at θ, one joint product :func:`nmelab.split_product` for ``(H u, GN u,
    NME u)`` (independent of ρ, computed once), and one gradient per ρ, batched with ``vmap``.
    Jittable with ``objective`` (and a string ``direction``) static:
    ``jax.jit(lambda p, b, r: second_order_fidelity(obj, p, b, r))`` works.

    Traps:
      * ``Δg`` is a difference of two gradients; its relative rounding error is about
        ``eps · ‖g‖ / ‖Δg‖`` (returned as ``rounding_floor``). In float32 with ρ ≲ 1e-3 the
        residual can be dominated by rounding, not by the kinks: compare it with the floor.
      * At a stationary point (``g = 0``) the gradient direction is undefined: ``u`` is set to 0
        and the ratios are NaN. Use ``direction="random"`` there.
      * ``key`` is only read for ``direction="random"`` (the probe of
        :func:`nmelab.estimators.probes.sample_probe`).

    Args:
      objective: the model and loss.
      params: the point θ.
      batch: ``(x, y)``; use a fixed probe batch when tracking the fidelity during training.
      rho: a step length or a 1-D sequence/array of them; every value must be finite and > 0.
        Cast to the params' dtype.
      direction: ``"gradient"`` (``u = g/‖g‖``, SAM's direction), ``"random"`` (Rademacher,
        normalised; needs ``key``) or a pytree like ``params`` (normalised here).
      key: the ``jax.random`` key for ``direction="random"``.
      loop: ``"auto"``, ``"compiled"`` or ``"python"`` (the gradients per ρ one after another);
        see :mod:`nmelab.estimators.loops`.

    Returns:
      A :class:`FidelityResult` whose arrays have a leading axis over ``rho`` (size 1 for a
      scalar ρ).

    Raises:
      TypeError: if ``objective`` is not an :class:`~nmelab.Objective` or params are not floating.
      ValueError: for a ρ that is not finite and positive, an unknown direction string,
        ``"random"`` without ``key``, a direction pytree whose structure or shapes differ from
        the params', a zero direction, or a malformed batch.
    """
    check_inputs(objective, params, batch)
    python = loops.use_python_loop(loop, params)
    dtype = jnp.result_type(*jax.tree.leaves(params))
    rhos = _check_rho(rho, dtype)
    if isinstance(direction, str):
        if direction not in _DIRECTIONS:
            raise ValueError(
                f"direction must be 'gradient', 'random' or a pytree like params, got {direction!r}"
            )
        if direction == "random":
            if key is None:
                raise ValueError("direction='random' needs a key: pass key=jax.random.PRNGKey(...)")
            return _fidelity(objective, params, tuple(batch), rhos, key, "random", python)
        return _fidelity(objective, params, tuple(batch), rhos, None, "gradient", python)
    validation.check_like(direction, params, "direction")
    direction = jax.tree.map(
        lambda d, p: jnp.asarray(d, dtype=jnp.result_type(p)), direction, params
    )
    if all(validation.is_concrete(leaf) for leaf in jax.tree.leaves(direction)):
        if float(_tree.tree_norm(direction)) == 0.0:
            raise ValueError("direction must be nonzero, got a direction of norm 0")
    return _fidelity(objective, params, tuple(batch), rhos, direction, "given", python)


def _as_float(x: Any) -> float:
    return float(np.asarray(x))


def fidelity_summary(
    result: FidelityResult, prefix: str = "fidelity", *, layers: bool = False
) -> dict[str, float]:
    """Flatten a result into ``{name: float}`` for a training log.

    Keys are ``"{prefix}/rho={ρ:g}/{predictor}/{metric}"`` for the whole model, plus
    ``"{prefix}/rho={ρ:g}/delta_norm"`` and ``"{prefix}/rho={ρ:g}/rounding_floor"``; with
    ``layers=True`` also ``"{prefix}/rho={ρ:g}/layer={name}/{predictor}/{metric}"``.
    E.g. ``"fidelity/rho=0.01/hessian/cosine"``. Call it outside ``jit`` (it reads values).
    """
    out: dict[str, float] = {}
    for i, r in enumerate(np.asarray(result.rho).tolist()):
        head = f"{prefix}/rho={r:g}"
        blocks = {"": result}
        if layers:
            blocks.update({f"/layer={name}": block for name, block in result.layers.items()})
        for tag, block in blocks.items():
            for predictor in PREDICTORS:
                fid = getattr(block, predictor)
                for metric in METRICS:
                    out[f"{head}{tag}/{predictor}/{metric}"] = _as_float(getattr(fid, metric)[i])
            if tag:
                out[f"{head}{tag}/delta_norm"] = _as_float(block.delta_norm[i])
        out[f"{head}/delta_norm"] = _as_float(result.delta_norm[i])
        out[f"{head}/rounding_floor"] = _as_float(result.rounding_floor[i])
    return out


def fidelity_rows(result: FidelityResult, **labels: Any) -> list[dict[str, Any]]:
    """Flatten a result into table rows, one per ``(ρ, layer, predictor)``.

    Each row holds ``labels`` (e.g. ``activation="relu", step=1000``), then ``rho``, ``layer``
    (``"all"`` for the whole model), ``predictor`` (``"hessian"``, ``"gauss_newton"``, ``"nme"``),
    the four :data:`METRICS` and ``delta_norm``. ``pandas.DataFrame(fidelity_rows(...))`` gives a
    long-format table ready for a figure.
    """
    rows = []
    blocks = {"all": result, **result.layers}
    for i, r in enumerate(np.asarray(result.rho).tolist()):
        for layer, block in blocks.items():
            for predictor in PREDICTORS:
                fid = getattr(block, predictor)
                row = dict(labels)
                row.update(rho=r, layer=layer, predictor=predictor)
                row.update({m: _as_float(getattr(fid, m)[i]) for m in METRICS})
                row["delta_norm"] = _as_float(block.delta_norm[i])
                rows.append(row)
    return rows


__all__ = [
    "METRICS",
    "PREDICTORS",
    "BlockFidelity",
    "FidelityResult",
    "PredictorFidelity",
    "fidelity_rows",
    "fidelity_summary",
    "second_order_fidelity",
]
