"""The empirical neural tangent kernel (paper App. A.1, eq. 22)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from nmelab import validation
from nmelab.objective import Objective
from nmelab.types import Params

__all__ = ["ntk"]


def ntk(objective: Objective, params: Params, x: Any) -> jax.Array:
    """The empirical NTK ``Θ̂ = (1/N) J Jᵀ`` over the ``N`` inputs of ``x`` (eq. 22).

    ``J`` is the ``(N·K) × P`` Jacobian of all outputs, rows in example-major order (output ``k`` of
    example ``n`` is row ``n·K + k``). The nonzero spectrum of ``Θ̂ · (N H_z)`` equals the spectrum of
    the Gauss-Newton matrix of the batch-mean loss, where ``H_z`` is that loss's output Hessian: the
    ``1/N`` of the NTK and the ``N`` undo each other (App. A.1). Dense; for small models.

    Args:
      objective: the model (its loss is not used).
      params: the point θ.
      x: ``N`` inputs.

    Returns:
      The ``(N·K, N·K)`` matrix.

    Raises:
      TypeError: non-floating params.
      ValueError: NaN/inf params, an empty ``x``, or NaN/inf in ``x`` (both value checks only where
        the arrays are concrete, not under ``jit``).
    """
    validation.check_params(params)
    num = validation.check_examples(x, "x")
    flat, unravel = ravel_pytree(params)
    jac = jax.jacrev(lambda f: jnp.reshape(objective.outputs(unravel(f), x), (-1,)))(flat)
    return jac @ jac.T / num
