"""The joint product ``(H v, GN v, NME v)`` from one linearization (paper eq. 2)."""

from __future__ import annotations

import jax
from jax.tree_util import Partial

from nmelab import validation
from nmelab.curvature.gauss_newton import linearize_gauss_newton
from nmelab.curvature.nme import linearize_nme
from nmelab.curvature.operator import check_inputs, output_gradient_fn
from nmelab.objective import Objective
from nmelab.types import Batch, Params, PyTree

__all__ = ["linearize_split", "split_product"]


def _add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(lambda x, y: x + y, a, b)


def split_product(
    objective: Objective, params: Params, batch: Batch, v: PyTree
) -> tuple[PyTree, PyTree, PyTree]:
    """Return ``(H v, GN v, NME v)`` with ``H v = GN v + NME v``, sharing one forward pass.

    One forward-over-reverse pass through ``θ -> (Jᵀ sg(∂L/∂z), z)`` yields ``NME v`` and ``J v``
    together; the reverse pass stored in that same evaluation then gives ``GN v = Jᵀ H_z J v``.
    The identity ``H = GN + NME`` holds product by product, which :func:`nmelab.trace_split` relies on.

    Args:
      objective: the model and loss.
      params: the point θ.
      batch: ``(x, y)``.
      v: a pytree like ``params``.

    Returns:
      ``(H v, GN v, NME v)``.

    Raises:
      TypeError, ValueError: as :func:`nmelab.hessian` for the inputs (an empty batch, NaN/inf in
        ``x`` where concrete, ...), and a ``v`` whose tree or leaf shapes differ from the params'
        (the leaf is named, as for ``H @ v``).
    """
    check_inputs(objective, params, batch)
    validation.check_like(v, params, "v")
    return _split_product(objective, params, tuple(batch), v)


@jax.jit(static_argnums=0)
def _split_product(objective: Objective, params: Params, batch: Batch, v: PyTree):
    x, y = batch
    gradient_of_outputs = output_gradient_fn(objective, y)

    def frozen_gradient_and_outputs(p: Params):
        z, vjp_fn = jax.vjp(lambda q: objective.outputs(q, x), p)
        residual = jax.lax.stop_gradient(gradient_of_outputs(z))
        return (vjp_fn(residual)[0], z), vjp_fn

    (_, z), (nme_v, jv), vjp_fn = jax.jvp(
        frozen_gradient_and_outputs, (params,), (v,), has_aux=True
    )
    gn_v = vjp_fn(jax.jvp(gradient_of_outputs, (z,), (jv,))[1])[0]
    return _add(gn_v, nme_v), gn_v, nme_v


def _apply_split(gn_fn: Partial, nme_fn: Partial, v: PyTree) -> tuple[PyTree, PyTree, PyTree]:
    gn_v, nme_v = gn_fn(v), nme_fn(v)
    return _add(gn_v, nme_v), gn_v, nme_v


def linearize_split(objective: Objective, params: Params, batch: Batch) -> Partial:
    """Return ``v -> (H v, GN v, NME v)`` with the forward pass done once, for repeated products.

    Raises:
      TypeError, ValueError: as :func:`split_product` for the inputs.
    """
    check_inputs(objective, params, batch)
    return Partial(
        _apply_split,
        linearize_gauss_newton(objective, params, batch),
        linearize_nme(objective, params, batch),
    )
