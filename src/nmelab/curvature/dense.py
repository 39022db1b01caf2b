"""Dense twins of every curvature operator, for tests and small models.

Each is computed by a route independent of the matrix-free products: ``jax.hessian`` and
``jax.jacfwd`` on the raveled parameters, and the explicit ``J`` and ``H_z``. Memory is ``O(P²)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from nmelab.objective import Objective
from nmelab.types import Batch, Params

__all__ = [
    "dense_gauss_newton",
    "dense_hessian",
    "dense_jacobian",
    "dense_nme",
    "dense_output_hessian",
]


def dense_hessian(objective: Objective, params: Params, batch: Batch) -> jax.Array:
    """``∇²_θ L`` by ``jax.hessian`` on the raveled params, ``P × P``."""
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda f: objective.value(unravel(f), batch))(flat)


def dense_jacobian(objective: Objective, params: Params, x) -> jax.Array:
    """``J = ∂z/∂θ`` by forward mode, ``(N·K) × P``, rows in example-major order."""
    flat, unravel = ravel_pytree(params)
    return jax.jacfwd(lambda f: jnp.reshape(objective.outputs(unravel(f), x), (-1,)))(flat)


def dense_output_hessian(objective: Objective, params: Params, batch: Batch) -> jax.Array:
    """``H_z = ∇²_z L`` of the batch-mean loss, ``(N·K) × (N·K)``."""
    x, y = batch
    z = objective.outputs(params, x)
    return jax.hessian(lambda f: objective.loss_fn(jnp.reshape(f, z.shape), y))(jnp.ravel(z))


def dense_gauss_newton(objective: Objective, params: Params, batch: Batch) -> jax.Array:
    """``Jᵀ H_z J`` from the explicit matrices."""
    jac = dense_jacobian(objective, params, batch[0])
    return jac.T @ dense_output_hessian(objective, params, batch) @ jac


def dense_nme(objective: Objective, params: Params, batch: Batch) -> jax.Array:
    """``Σ_{n,k} (∂L/∂z_nk) ∇²_θ z_nk`` from the explicit output gradient and model Hessians."""
    x, y = batch
    flat, unravel = ravel_pytree(params)
    z = objective.outputs(params, x)
    residual = jax.grad(lambda f: objective.loss_fn(f, y))(z)
    model_hessians = jax.hessian(lambda f: objective.outputs(unravel(f), x))(flat)
    return jnp.tensordot(residual, model_hessians, axes=residual.ndim)
