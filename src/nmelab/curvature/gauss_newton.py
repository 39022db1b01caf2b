"""The Gauss-Newton matrix ``GN = Jᵀ H_z J`` (paper eq. 2-3)."""

from __future__ import annotations

import jax
from jax.tree_util import Partial

from nmelab.curvature.operator import CurvatureOperator, make_operator, output_gradient_fn
from nmelab.objective import Objective
from nmelab.types import Batch, Params, PyTree

__all__ = ["gauss_newton", "gauss_newton_vector_product", "linearize_gauss_newton"]


def _compose(jvp_fn: Partial, output_hessian_fn: Partial, vjp_fn: Partial, v: PyTree) -> PyTree:
    return vjp_fn(output_hessian_fn(jvp_fn(v)))[0]


def linearize_gauss_newton(objective: Objective, params: Params, batch: Batch) -> Partial:
    """Return ``v -> Jᵀ H_z J v`` built from one linearization of the model.

    ``J v`` is the linearized model (forward mode), ``H_z`` the linearized output gradient of the
    loss, and ``Jᵀ`` the transpose of the same linear map, so the model's forward pass is run once.
    """
    x, y = batch
    z, jvp_fn = jax.linearize(lambda p: objective.outputs(p, x), params)
    vjp_fn = jax.linear_transpose(jvp_fn, params)
    output_hessian_fn = jax.linearize(output_gradient_fn(objective, y), z)[1]
    return Partial(_compose, jvp_fn, output_hessian_fn, vjp_fn)


def gauss_newton_vector_product(
    objective: Objective, params: Params, batch: Batch, v: PyTree
) -> PyTree:
    """``GN v = Jᵀ (H_z (J v))``: one JVP, one output-space Hessian product, one VJP."""
    return linearize_gauss_newton(objective, params, batch)(v)


def gauss_newton(objective: Objective, params: Params, batch: Batch) -> CurvatureOperator:
    """The Gauss-Newton matrix ``GN = Jᵀ H_z J`` (paper eq. 2), matrix-free.

    ``J = ∂z/∂θ`` is the Jacobian of all outputs of the batch and ``H_z = ∇²_z L`` the Hessian of the
    (batch-mean) loss in the outputs. GN is the Hessian of the loss of the *linearized* model (eq. 3).
    It is positive semi-definite for losses convex in the outputs (cross-entropy, MSE); for a custom
    non-convex loss the ``psd`` flag is still set and is then wrong - check ``H_z`` yourself.

    Args:
      objective: the model and loss.
      params: the point θ.
      batch: ``(x, y)``.

    Returns:
      A symmetric, PSD :class:`~nmelab.curvature.operator.CurvatureOperator`.
    """
    return make_operator(
        objective,
        params,
        batch,
        name="gauss_newton",
        product_fn=gauss_newton_vector_product,
        linearize_fn=linearize_gauss_newton,
        psd=True,
    )
