"""Matrix-free linear operators over parameter pytrees (the lineax ``mv`` / ``as_matrix`` shape).

Two concrete operators share one interface:

* :class:`CurvatureOperator` holds ``(objective, params, batch)`` and computes each product from
  scratch: one linearization per call. It is what :func:`nmelab.hessian` and friends return.
* :class:`LinearizedOperator` holds the *residuals* of one linearization (a
  :class:`jax.tree_util.Partial`) and applies only the linear part: the forward pass is paid once.
  Iterative methods (Lanczos, Hutchinson with many probes) use ``op.linearize()``. This is the JAX
  analogue of PyHessian's graph reuse.

Both are pytrees, so they can be passed into ``jax.jit``/``vmap``; the objective and the product
function are static, the arrays are leaves. A second call with the same shapes hits the jit cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from nmelab import validation
from nmelab.objective import Objective
from nmelab.types import Batch, Params, PyTree

__all__ = [
    "CurvatureOperator",
    "LinearizeFn",
    "LinearizedOperator",
    "Operator",
    "ProductFn",
    "check_inputs",
    "make_operator",
    "output_gradient_fn",
]

ProductFn = Callable[[Objective, Params, Batch, PyTree], PyTree]
LinearizeFn = Callable[[Objective, Params, Batch], jax.tree_util.Partial]

_AS_MATRIX_CHUNK = 64


class _OperatorMixin:
    """The shared interface: ``mv``, ``@``, ``as_matrix`` and shape information."""

    params: Params
    name: str
    symmetric: bool
    psd: bool

    def _raw_mv(self, v: PyTree) -> PyTree:
        raise NotImplementedError

    def mv(self, v: PyTree) -> PyTree:
        """Return ``A v`` for a pytree ``v`` with the structure and shapes of the params.

        ``v`` is cast to the params' dtypes. Works under ``jax.jit`` and ``jax.vmap`` over ``v``.

        Raises:
          ValueError: if ``v``'s tree structure or leaf shapes differ from the params'.
        """
        validation.check_like(v, self.params, "v")
        v = jax.tree.map(lambda a, p: jnp.asarray(a, dtype=jnp.result_type(p)), v, self.params)
        return _jitted_mv(self, v)

    def __matmul__(self, v: PyTree) -> PyTree:
        return self.mv(v)

    @property
    def num_params(self) -> int:
        """``P``, the number of scalar parameters."""
        return int(sum(jnp.size(leaf) for leaf in jax.tree.leaves(self.params)))

    @property
    def shape(self) -> tuple[int, int]:
        """``(P, P)``."""
        return (self.num_params, self.num_params)

    @property
    def dtype(self) -> jnp.dtype:
        """The dtype of the raveled params (and of ``as_matrix()``)."""
        return ravel_pytree(self.params)[0].dtype

    def as_matrix(self) -> jax.Array:
        """Return the dense ``P × P`` matrix in :func:`jax.flatten_util.ravel_pytree` order.

        Costs ``P`` products (batched); only for small models.
        """
        return _jitted_as_matrix(self)

    def __repr__(self) -> str:
        flags = f"symmetric={self.symmetric}, psd={self.psd}"
        return f"{type(self).__name__}({self.name}, shape={self.shape}, {flags})"


@dataclasses.dataclass(frozen=True, repr=False)
class CurvatureOperator(_OperatorMixin):
    """A curvature matrix of ``objective`` at ``params`` on ``batch``, as products.

    Attributes:
      objective: the :class:`~nmelab.Objective` (static).
      params: the point θ.
      batch: ``(x, y)``.
      name: ``"hessian"``, ``"gauss_newton"``, ``"nme"`` or ``"fisher"``.
      product_fn: ``product_fn(objective, params, batch, v) -> A v`` (static).
      linearize_fn: ``linearize_fn(objective, params, batch) -> Partial`` of ``v -> A v`` (static).
      symmetric: whether the matrix is symmetric.
      psd: whether the matrix is positive semi-definite.
    """

    objective: Objective
    params: Params
    batch: Batch
    name: str
    product_fn: ProductFn
    linearize_fn: LinearizeFn
    symmetric: bool = True
    psd: bool = False

    def _raw_mv(self, v: PyTree) -> PyTree:
        return self.product_fn(self.objective, self.params, self.batch, v)

    def linearize(self) -> LinearizedOperator:
        """Linearize once; the returned operator's products skip the forward pass.

        Under ``jit`` this is free to call inside the traced function; eagerly it runs one jitted
        linearization and stores its residuals (memory: about one backward pass's activations).
        """
        return _jitted_linearize(self)


@dataclasses.dataclass(frozen=True, repr=False)
class LinearizedOperator(_OperatorMixin):
    """An operator whose product is the stored linear map ``matvec`` (a pytree of residuals).

    Attributes:
      matvec: a :class:`jax.tree_util.Partial` computing ``v -> A v``.
      params: the point θ (used for shapes, dtypes and ravel order).
      name, symmetric, psd: as for :class:`CurvatureOperator`.
    """

    matvec: jax.tree_util.Partial
    params: Params
    name: str
    symmetric: bool = True
    psd: bool = False

    def _raw_mv(self, v: PyTree) -> PyTree:
        return self.matvec(v)

    def linearize(self) -> LinearizedOperator:
        """Return ``self``: already linearized."""
        return self


jax.tree_util.register_dataclass(
    CurvatureOperator,
    data_fields=["params", "batch"],
    meta_fields=["objective", "name", "product_fn", "linearize_fn", "symmetric", "psd"],
)
jax.tree_util.register_dataclass(
    LinearizedOperator,
    data_fields=["matvec", "params"],
    meta_fields=["name", "symmetric", "psd"],
)

Operator = CurvatureOperator | LinearizedOperator


@jax.jit
def _jitted_mv(op: Operator, v: PyTree) -> PyTree:
    return op._raw_mv(v)


@jax.jit
def _jitted_linearize(op: CurvatureOperator) -> LinearizedOperator:
    matvec = op.linearize_fn(op.objective, op.params, op.batch)
    return LinearizedOperator(matvec, op.params, op.name, op.symmetric, op.psd)


@jax.jit
def _jitted_as_matrix(op: Operator) -> jax.Array:
    flat, unravel = ravel_pytree(op.params)
    op = op.linearize() if isinstance(op, CurvatureOperator) else op

    def column(e: jax.Array) -> jax.Array:
        return ravel_pytree(op._raw_mv(unravel(e)))[0]

    basis = jnp.eye(flat.size, dtype=flat.dtype)
    return jax.lax.map(column, basis, batch_size=min(flat.size, _AS_MATRIX_CHUNK)).T


def make_operator(
    objective: Objective,
    params: Params,
    batch: Batch,
    *,
    name: str,
    product_fn: ProductFn,
    linearize_fn: LinearizeFn,
    psd: bool,
) -> CurvatureOperator:
    """Validate the inputs and build a :class:`CurvatureOperator`.

    Raises:
      TypeError: if ``objective`` is not an :class:`~nmelab.Objective` or params are not floating.
      ValueError: as :func:`check_inputs` (the bad leaf or argument is named).
    """
    check_inputs(objective, params, batch)
    return CurvatureOperator(
        objective, params, tuple(batch), name, product_fn, linearize_fn, True, psd
    )


def check_inputs(objective: Objective, params: Params, batch: Batch) -> None:
    """Validate ``(objective, params, batch)`` as every public entry point does.

    Called eagerly, this refuses NaN/inf in params, inputs ``x`` and float targets ``y``, an empty
    batch and labels out of range. Under ``jit`` the arrays are tracers: the structure, shape and
    dtype checks (including the empty batch) still run, the value checks (NaN/inf, label range)
    are skipped, and a NaN input then shows up as NaN results.

    Raises:
      TypeError: if ``objective`` is not an :class:`~nmelab.Objective` or params are not floating.
      ValueError: for NaN/inf params, an empty batch, NaN/inf inputs, a malformed batch, or
        targets that do not fit the outputs.
    """
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an nmelab.Objective, got {type(objective).__name__}")
    validation.check_params(params)
    x, y = validation.check_batch(batch)
    outputs = jax.eval_shape(objective.outputs, params, x)
    validation.check_targets(tuple(outputs.shape), y, objective.loss)


def output_gradient_fn(objective: Objective, y: Any) -> Callable[[jax.Array], jax.Array]:
    """Return ``z -> ∇_z loss(z, y)``."""
    return jax.grad(lambda z: objective.loss_fn(z, y))
