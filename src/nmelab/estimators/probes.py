"""Probe vectors, quadratic forms ``vᵀAv``, the :class:`Estimate` record and shared input checks.

Every stochastic estimator in :mod:`nmelab.estimators` draws its probes here, so that a probe is a
pure function of its key: ``keys = jax.random.split(key, num_probes)`` and probe ``i`` is
``sample_probe(keys[i], params, kind)``. Tests rebuild the exact probes an estimator used this way.

Quadratic forms without the backward pass
-----------------------------------------
A trace or a diagonal only needs ``vᵀAv``, not the vector ``Av``. For the operators built by
:func:`nmelab.hessian`, :func:`nmelab.gauss_newton` and :func:`nmelab.nme` the three forms come from
one *second-order forward pass* of the model along ``v`` (forward-over-forward), with no backward
pass at all. Along the line ``θ + t v``::

    d²/dt² L(z(θ + t v)) = (J v)ᵀ H_z (J v)  +  ∇_z L · (vᵀ ∇²_θ z v)
            vᵀ H v       =      vᵀ GN v      +       vᵀ NME v            (paper eq. 2)

so ``J v`` and ``vᵀ∇²z v`` (the "acceleration" of the outputs) give all three, and the split
holds probe by probe. This costs about one gradient per probe instead of the ~1.7-2 gradients of a
Hessian-vector product followed by a dot product; under ``vmap`` over probes the model's primal
forward pass is shared. Any other operator (a :class:`~nmelab.curvature.LinearizedOperator`, the
Fisher, a wrapped matrix) falls back to ``vᵀ(A v)`` with the operator linearized once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.tree_util import Partial

from nmelab._tree import tree_vdot
from nmelab.curvature.gauss_newton import gauss_newton_vector_product
from nmelab.curvature.hessian import hessian_vector_product
from nmelab.curvature.nme import nme_vector_product
from nmelab.curvature.operator import (
    CurvatureOperator,
    LinearizedOperator,
    Operator,
    output_gradient_fn,
)
from nmelab.objective import Objective
from nmelab.types import Batch, Params, PyTree
from nmelab.validation import check_choice, check_count  # re-exported for the estimators

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_UNIT_BATCH_SIZE",
    "PROBES",
    "Estimate",
    "SplitEstimate",
    "check_batch_size",
    "check_choice",
    "check_count",
    "check_key",
    "check_operator",
    "check_probe_arguments",
    "check_symmetric",
    "chunked_map",
    "flat_product",
    "flat_size_and_dtype",
    "flatten",
    "form_context",
    "matrix_operator",
    "mean_estimate",
    "probe_form",
    "probe_keys",
    "quadratic_form_fn",
    "sample_flat_probe",
    "sample_probe",
    "split_forms_fn",
]

PROBES: tuple[str, ...] = ("rademacher", "gaussian")
"""Probe distributions: Rademacher (±1, the minimum-variance Hutchinson probe) or standard normal."""

DEFAULT_BATCH_SIZE = 16
"""Probes evaluated together (``vmap``) per chunk of ``jax.lax.map`` unless told otherwise."""

DEFAULT_UNIT_BATCH_SIZE = 64
"""Unit vectors per chunk for the exact (``P`` products) trace and diagonal."""


# --------------------------------------------------------------------------------------------
# The estimate record
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate with its standard error.

    A pytree (``value``, ``stderr`` and ``samples`` are leaves), so estimators can be ``jit``-ed and
    ``vmap``-ed over keys; ``num_matvecs`` is static metadata.

    Attributes:
      value: the estimate, a scalar array (traces) or a pytree like the params (diagonals).
      stderr: its standard error, ``std(samples, ddof=1) / √n`` for a sample mean; ``0`` for an exact
        value and ``nan`` when it cannot be estimated (a single sample).
      num_matvecs: the cost in operator products (one quadratic form ``vᵀAv`` counts as one); for
        the sampled-label Gauss-Newton trace, the number of gradient evaluations.
      samples: the per-probe samples whose mean is ``value`` (scalar estimators only), else ``None``.
    """

    value: Any
    stderr: Any
    num_matvecs: int
    samples: Any = None

    def __str__(self) -> str:
        if jnp.ndim(self.value) == 0 and not isinstance(self.value, dict | list | tuple):
            return f"{float(self.value):.6g} ± {float(self.stderr):.2g}"
        return repr(self)


jax.tree_util.register_dataclass(
    Estimate, data_fields=["value", "stderr", "samples"], meta_fields=["num_matvecs"]
)


@dataclasses.dataclass(frozen=True)
class SplitEstimate:
    """Estimates of one quantity for the three matrices of the split ``H = GN + NME`` (eq. 2).

    Returned by :func:`nmelab.trace_split` (traces on shared probes, so
    ``hessian.samples == gauss_newton.samples + nme.samples`` element by element) and
    :func:`nmelab.estimators.diagonal_split` (exact diagonals). A pytree.

    Attributes:
      hessian: the estimate for ``H``.
      gauss_newton: the estimate for ``GN``.
      nme: the estimate for ``NME``.
    """

    hessian: Estimate
    gauss_newton: Estimate
    nme: Estimate

    def as_dict(self) -> dict[str, Estimate]:
        """``{"hessian": ..., "gauss_newton": ..., "nme": ...}``."""
        return {"hessian": self.hessian, "gauss_newton": self.gauss_newton, "nme": self.nme}


jax.tree_util.register_dataclass(
    SplitEstimate, data_fields=["hessian", "gauss_newton", "nme"], meta_fields=[]
)


def mean_estimate(samples: jax.Array, num_matvecs: int) -> Estimate:
    """The sample mean of ``samples`` (leading axis) with stderr ``std(ddof=1)/√n`` (``nan`` if n=1)."""
    n = samples.shape[0]
    value = jnp.mean(samples, axis=0)
    if n > 1:
        stderr = jnp.std(samples, axis=0, ddof=1) / math.sqrt(n)
    else:
        stderr = jnp.full_like(value, jnp.nan)
    return Estimate(value, stderr, num_matvecs, samples)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def check_batch_size(batch_size: Any, default: int) -> int:
    """Return ``batch_size`` (a positive int) or ``default`` when it is ``None``."""
    if batch_size is None:
        return default
    return check_count(batch_size, "batch_size")


def check_key(key: Any, name: str = "key") -> None:
    """Require a ``jax.random`` key: a typed key scalar or a raw ``uint32[2]`` key.

    Raises:
      TypeError: for ``None`` or a non-array.
      ValueError: for an array of the wrong shape or dtype.
    """
    if key is None:
        raise TypeError(f"{name} must be a jax.random key (e.g. jax.random.key(0)), got None")
    if not hasattr(key, "dtype") or not hasattr(key, "shape"):
        raise TypeError(f"{name} must be a jax.random key, got {type(key).__name__}")
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name} must be a single key of shape (), got shape {key.shape}")
        return
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise ValueError(
            f"{name} must be a jax.random key: a typed key or uint32[2] (jax.random.PRNGKey), "
            f"got {key.dtype}{list(key.shape)}"
        )


def check_operator(op: Any, name: str = "op") -> Operator:
    """Require an nmelab operator (``CurvatureOperator`` or ``LinearizedOperator``).

    Raises:
      TypeError: for anything else (wrap a dense matrix with :func:`matrix_operator`).
    """
    if not isinstance(op, CurvatureOperator | LinearizedOperator):
        raise TypeError(
            f"{name} must be an nmelab operator (nmelab.hessian(...), .linearize(), "
            f"matrix_operator(...)), got {type(op).__name__}"
        )
    return op


def check_probe_arguments(
    op: Operator, key: Any, num_probes: Any, probe: str, batch_size: Any, *, minimum: int = 1
) -> tuple[int, int]:
    """The checks every probing estimator runs; return ``(num_probes, batch_size)``.

    Raises:
      TypeError: for a non-operator, a missing key or a non-integer count.
      ValueError: for ``num_probes < minimum``, an unknown probe or a non-positive ``batch_size``.
    """
    check_operator(op)
    check_key(key)
    num_probes = check_count(num_probes, "num_probes", minimum)
    check_choice(probe, "probe", PROBES)
    return num_probes, check_batch_size(batch_size, DEFAULT_BATCH_SIZE)


def check_symmetric(op: Operator, name: str = "op") -> None:
    """Require ``op.symmetric`` (Lanczos and SLQ are only defined for symmetric matrices).

    Raises:
      ValueError: for an operator flagged non-symmetric.
    """
    if not op.symmetric:
        raise ValueError(f"{name} must be symmetric (op.symmetric is False for {op.name!r})")


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------


def flat_size_and_dtype(params: Params) -> tuple[int, jnp.dtype]:
    """``(P, dtype)`` of the raveled params, without materialising the ravel."""
    leaves = jax.tree.leaves(params)
    size = sum(math.prod(jnp.shape(leaf)) for leaf in leaves)
    dtype = jnp.result_type(*leaves)
    return size, dtype


def sample_flat_probe(key: jax.Array, size: int, dtype: Any, kind: str) -> jax.Array:
    """A raveled probe of ``size`` entries: Rademacher (±1) or standard normal.

    Rademacher signs are the 32 bits of each random ``uint32`` word (every bit of the generator's
    output is an independent fair coin): ``jax.random.rademacher`` draws one word per sign, and on
    CPU that costs about a gradient per probe for a 1.86M-parameter model; the packed draw costs
    ~0.1 gradient. Gaussian probes still pay the full price (one normal per entry).
    """
    if kind == "rademacher":
        words = jax.random.bits(key, (-(-size // 32),), jnp.uint32)
        bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)[None, :]) & 1
        return (1 - 2 * bits.reshape(-1)[:size].astype(jnp.int32)).astype(dtype)
    return jax.random.normal(key, (size,), dtype=dtype)


def sample_probe(key: jax.Array, params: Params, kind: str = "rademacher") -> PyTree:
    """A probe ``v`` with ``E[v vᵀ] = I`` shaped like ``params`` (drawn raveled, then unraveled).

    Args:
      key: a ``jax.random`` key.
      params: the pytree whose structure, shapes and dtypes the probe takes.
      kind: ``"rademacher"`` or ``"gaussian"``.

    Returns:
      A pytree like ``params``.
    """
    check_choice(kind, "probe", PROBES)
    flat, unravel = ravel_pytree(params)
    return unravel(sample_flat_probe(key, flat.size, flat.dtype, kind))


def probe_keys(key: jax.Array, num_probes: int) -> jax.Array:
    """The per-probe keys every estimator uses: ``jax.random.split(key, num_probes)``."""
    return jax.random.split(key, num_probes)


# --------------------------------------------------------------------------------------------
# Operators from matrices, products and quadratic forms
# --------------------------------------------------------------------------------------------


def matrix_operator(
    matrix: Any, *, name: str = "matrix", symmetric: bool = True, psd: bool = False
) -> LinearizedOperator:
    """Wrap a dense ``P × P`` matrix as an operator on flat ``P``-vectors (for tests and examples).

    The operator's params are a zero vector of length ``P`` (only its shape and dtype matter).

    Raises:
      ValueError: if ``matrix`` is not square.
    """
    matrix = jnp.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square (P, P), got shape {matrix.shape}")
    return LinearizedOperator(
        Partial(jnp.matmul, matrix),
        jnp.zeros(matrix.shape[0], matrix.dtype),
        name,
        symmetric,
        psd,
    )


def flatten(tree: PyTree) -> jax.Array:
    """Ravel a pytree into one vector in :func:`jax.flatten_util.ravel_pytree` order.

    The same vector as ``ravel_pytree(tree)[0]`` (leaves promoted to a common dtype), built with
    ``dynamic_update_slice`` into a zero buffer rather than ``concatenate``: XLA:CPU's concatenate of
    large operands was measured 35x slower (140 ms for 1.86M floats, more than ten gradients) and
    dominated every Lanczos step.
    """
    leaves = jax.tree.leaves(tree)
    dtype = jnp.result_type(*leaves)
    size = sum(math.prod(jnp.shape(leaf)) for leaf in leaves)
    flat = jnp.zeros(size, dtype)
    offset = 0
    for leaf in leaves:
        piece = jnp.ravel(leaf).astype(dtype)
        flat = jax.lax.dynamic_update_slice(flat, piece, (offset,))
        offset += piece.size
    return flat


def flat_product(lin: LinearizedOperator, u: jax.Array) -> jax.Array:
    """``ravel(A unravel(u))`` for a raveled vector ``u`` and a linearized operator."""
    _, unravel = ravel_pytree(lin.params)
    return flatten(lin.mv(unravel(u))).astype(u.dtype)


def split_forms_fn(
    objective: Objective, params: Params, batch: Batch
) -> Callable[[PyTree], tuple[jax.Array, jax.Array, jax.Array]]:
    """Return ``v -> (vᵀHv, vᵀGNv, vᵀNMEv)`` from one second-order forward pass along ``v``.

    ``vᵀGNv = (Jv)ᵀ H_z (Jv)`` and ``vᵀNMEv = ∇_z L · (vᵀ∇²_θ z v)`` (paper eq. 2), and the Hessian
    form is their sum, so ``H = GN + NME`` holds sample by sample. No backward pass through the
    model: about one gradient's cost. Works for any loss (``H_z`` enters through a second
    directional derivative of the loss in the outputs) and any ``custom_jvp`` activation.
    """
    x, y = batch

    def outputs(p: Params) -> jax.Array:
        return objective.outputs(p, x)

    def loss(z: jax.Array) -> jax.Array:
        return objective.loss_fn(z, y)

    def forms(v: PyTree) -> tuple[jax.Array, jax.Array, jax.Array]:
        def outputs_and_velocity(p: Params):
            return jax.jvp(outputs, (p,), (v,))

        (z, jv), (_, acceleration) = jax.jvp(outputs_and_velocity, (params,), (v,))
        residual = output_gradient_fn(objective, y)(z)
        gn = jnp.vdot(jv, jax.jvp(jax.grad(loss), (z,), (jv,))[1])
        nme = jnp.vdot(residual, acceleration)
        return gn + nme, gn, nme

    return forms


def _gauss_newton_form_fn(objective: Objective, params: Params, batch: Batch):
    x, y = batch

    def form(v: PyTree) -> jax.Array:
        z, jv = jax.jvp(lambda p: objective.outputs(p, x), (params,), (v,))
        hz_jv = jax.jvp(output_gradient_fn(objective, y), (z,), (jv,))[1]
        return jnp.vdot(jv, hz_jv)

    return form


_FORWARD_FORMS = (gauss_newton_vector_product, hessian_vector_product, nme_vector_product)


def form_context(op: Operator) -> Operator:
    """``op`` prepared for a loop of :func:`quadratic_form_fn` calls.

    Itself when a forward-only form exists, else linearized once, so no step linearizes again.
    """
    if isinstance(op, CurvatureOperator) and op.product_fn in _FORWARD_FORMS:
        return op
    return op.linearize()


def quadratic_form_fn(op: Operator) -> Callable[[PyTree], jax.Array]:
    """Return ``v -> vᵀ A v`` for ``op``, by the cheapest route nmelab knows (call inside ``jit``).

    The H, GN and NME operators of :func:`nmelab.hessian` / :func:`nmelab.gauss_newton` /
    :func:`nmelab.nme` use the forward-only forms of :func:`split_forms_fn` (GN needs only ``J v``);
    every other operator is linearized once and evaluated as ``⟨v, A v⟩``.
    """
    if isinstance(op, CurvatureOperator):
        if op.product_fn is gauss_newton_vector_product:
            return _gauss_newton_form_fn(op.objective, op.params, op.batch)
        index = {hessian_vector_product: 0, nme_vector_product: 2}.get(op.product_fn)
        if index is not None:
            forms = split_forms_fn(op.objective, op.params, op.batch)
            return lambda v: forms(v)[index]
    lin = op.linearize()
    return lambda v: tree_vdot(v, lin.mv(v))


def probe_form(probe: str, op: Operator, key: jax.Array) -> jax.Array:
    """``vᵀAv`` for the probe ``v = sample_probe(key, op.params, probe)`` (a loop step)."""
    return quadratic_form_fn(op)(sample_probe(key, op.params, probe))


def chunked_map(fn: Callable, xs: Any, num: int, batch_size: int) -> Any:
    """Map ``fn`` over the leading axis of ``xs``, ``batch_size`` items at a time under ``vmap``.

    A single item is mapped without a loop; ``batch_size == 1`` runs the items one after another
    (``lax.map`` without ``vmap``), which keeps ``lax.cond`` branches lazy; ``batch_size >= num`` is one ``vmap``; otherwise
    ``jax.lax.map(fn, xs, batch_size=batch_size)``.
    """
    if num == 1:  # no loop at all
        return jax.tree.map(lambda y: y[None], fn(jax.tree.map(lambda x: x[0], xs)))
    if batch_size == 1:
        return jax.lax.map(fn, xs)
    if batch_size >= num:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=batch_size)
