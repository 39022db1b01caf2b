"""The Nonlinear Modeling Error matrix ``NME = Σ_k (∂L/∂z_k) ∇²_θ z_k`` (paper eq. 2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nmelab.curvature.operator import CurvatureOperator, make_operator, output_gradient_fn
from nmelab.objective import Objective
from nmelab.types import Batch, Params, PyTree

__all__ = ["frozen_residual_gradient_fn", "linearize_nme", "nme", "nme_vector_product"]


def frozen_residual_gradient_fn(objective: Objective, batch: Batch):
    """Return ``θ -> Jᵀ(θ) stop_gradient(∂L/∂z)``: the gradient of ``⟨sg(∂L/∂z), z(θ)⟩``.

    Its Jacobian is exactly the NME, because the output gradient is held fixed: only the curvature of
    the model, ``∇²_θ z``, is differentiated.
    """
    x, y = batch

    def surrogate(p: Params) -> jax.Array:
        z = objective.outputs(p, x)
        residual = jax.lax.stop_gradient(output_gradient_fn(objective, y)(z))
        return jnp.sum(residual * z)

    return jax.grad(surrogate)


def nme_vector_product(objective: Objective, params: Params, batch: Batch, v: PyTree) -> PyTree:
    """``NME v`` directly, forward-over-reverse through the frozen-residual gradient.

    Trap: ``H v − GN v`` gives the same numbers in exact arithmetic but cancels catastrophically in
    float32 when the NME is small next to the GN (late in training) and costs more.
    """
    return jax.jvp(frozen_residual_gradient_fn(objective, batch), (params,), (v,))[1]


def linearize_nme(objective: Objective, params: Params, batch: Batch) -> jax.tree_util.Partial:
    """Return ``v -> NME v`` with the forward pass already done."""
    return jax.linearize(frozen_residual_gradient_fn(objective, batch), params)[1]


def nme(objective: Objective, params: Params, batch: Batch) -> CurvatureOperator:
    """The Nonlinear Modeling Error matrix ``NME = ∇_z L · ∇²_θ z`` (paper eq. 2), matrix-free.

    It is the only part of the Hessian that carries the model's second derivatives, hence the
    activation's ``φ''`` (eq. 11-12). Symmetric and indefinite; zero for a model linear in θ and at
    an interpolating point where ``∇_z L = 0``. For ReLU networks every within-layer block, and so the
    diagonal, is exactly zero (App. A.2).

    Args:
      objective: the model and loss.
      params: the point θ.
      batch: ``(x, y)``.

    Returns:
      A symmetric, indefinite :class:`~nmelab.curvature.operator.CurvatureOperator`.
    """
    return make_operator(
        objective,
        params,
        batch,
        name="nme",
        product_fn=nme_vector_product,
        linearize_fn=linearize_nme,
        psd=False,
    )
