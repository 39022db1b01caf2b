"""The Fisher information with labels sampled from the model (paper eq. 4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nmelab import validation
from nmelab.curvature.hessian import hessian_vector_product, linearize_hessian
from nmelab.curvature.operator import CurvatureOperator, check_inputs, make_operator
from nmelab.objective import Objective
from nmelab.types import Batch, Key, Params

__all__ = ["FISHER_LOSSES", "fisher", "sampled_targets"]

FISHER_LOSSES: tuple[str, ...] = ("cross_entropy", "mse")


def sampled_targets(
    objective: Objective, params: Params, x: jax.Array, key: Key, num_samples: int
) -> jax.Array:
    """Average ``num_samples`` targets drawn from the model's predictive distribution.

    Cross-entropy: ``ŷ ~ Cat(softmax z)``, returned as the mean one-hot vector. MSE: ``ŷ ~ N(z, I)``.
    Both losses are linear in the targets, so the Hessian at these averaged targets equals the mean
    of the Hessians at each sampled target. The result is a constant (``stop_gradient``).

    Raises:
      TypeError: a non-integer ``num_samples``.
      ValueError: for a custom loss, whose predictive distribution nmelab cannot know, or
        ``num_samples < 1``.
    """
    if objective.loss not in FISHER_LOSSES:
        raise ValueError(
            f"the sampled-label Fisher needs loss in {FISHER_LOSSES}, got {objective.loss!r}"
        )
    num_samples = validation.check_count(num_samples, "num_samples")
    z = jax.lax.stop_gradient(objective.outputs(params, x))
    if objective.loss == "cross_entropy":
        labels = jax.random.categorical(key, z, axis=-1, shape=(num_samples, *z.shape[:-1]))
        return jnp.mean(jax.nn.one_hot(labels, z.shape[-1], dtype=z.dtype), axis=0)
    noise = jax.random.normal(key, (num_samples, *z.shape), dtype=z.dtype)
    return z + jnp.mean(noise, axis=0)


def fisher(
    objective: Objective, params: Params, batch: Batch, key: Key, num_samples: int
) -> CurvatureOperator:
    """The sampled-label Fisher ``F̂ = (1/S) Σ_s ∇²_θ L(z, ŷ_s)``, ``ŷ_s ~ p_z`` (paper eq. 4).

    Its expectation over the labels is exactly the Gauss-Newton matrix: ``E[∇_z L(z, ŷ)] = 0`` so the
    NME of the sampled loss vanishes on average (eq. 5-6). With finitely many samples the leftover
    NME term is zero-mean noise of size ``O(1/√S)``; the estimate is therefore symmetric but *not*
    PSD (``psd=False``). The batch's own labels are ignored.

    Args:
      objective: the model and loss (``"cross_entropy"`` or ``"mse"``).
      params: the point θ.
      batch: ``(x, y)``; only ``x`` is used, ``y`` is still validated.
      key: the random key for the labels.
      num_samples: ``S``, labels drawn per example.

    Returns:
      A :class:`~nmelab.curvature.operator.CurvatureOperator` named ``"fisher"``.
    """
    check_inputs(objective, params, batch)
    x = batch[0]
    targets = sampled_targets(objective, params, x, key, num_samples)
    return make_operator(
        objective,
        params,
        (x, targets),
        name="fisher",
        product_fn=hessian_vector_product,
        linearize_fn=linearize_hessian,
        psd=False,
    )
