"""Losses on model outputs ``z``, as batch means.

Both built-in losses are *means over the batch*, ``L = (1/N) Σ_n ℓ(z_n, y_n)``. This matters for
every curvature quantity: the output Hessian ``H_z`` of the mean loss carries a factor ``1/N``, which
is why the sampled-label Gauss-Newton trace (paper eq. 20) picks up a factor ``N``.

Both are linear in the targets, so the Hessian averaged over sampled labels equals the Hessian at
the averaged (soft) target; :mod:`nmelab.curvature.fisher` relies on this.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from nmelab.types import LossFn

__all__ = ["LOSS_NAMES", "cross_entropy", "get", "mse"]

LOSS_NAMES: tuple[str, ...] = ("cross_entropy", "mse")


def _targets_like(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """One-hot encode integer labels to the outputs' shape and dtype; pass float targets through."""
    if jnp.issubdtype(targets.dtype, jnp.integer):
        return jax.nn.one_hot(targets, outputs.shape[-1], dtype=outputs.dtype)
    return targets.astype(outputs.dtype)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy ``-(1/N) Σ_n Σ_k y_nk log softmax(z_n)_k``.

    Args:
      logits: ``(N, K)`` outputs.
      targets: ``(N,)`` integer labels in ``[0, K)`` or ``(N, K)`` probability vectors.

    Returns:
      The scalar batch mean.
    """
    probs = _targets_like(logits, targets)
    return -jnp.mean(jnp.sum(probs * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def mse(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error ``(1/N) Σ_n ½‖z_n − y_n‖²``; integer labels are one-hot encoded.

    Args:
      outputs: ``(N, K)`` or ``(N,)`` outputs.
      targets: targets of the outputs' shape, or ``(N,)`` integer labels when outputs are ``(N, K)``.

    Returns:
      The scalar batch mean.
    """
    residual = outputs - _targets_like(outputs, targets)
    return 0.5 * jnp.sum(residual**2) / outputs.shape[0]


_LOSSES: dict[str, LossFn] = {"cross_entropy": cross_entropy, "mse": mse}


def get(loss: str | Callable) -> LossFn:
    """Resolve a loss name or callable.

    Args:
      loss: ``"cross_entropy"``, ``"mse"`` or a callable ``loss(outputs, targets) -> scalar``.

    Returns:
      The loss function.

    Raises:
      ValueError: for an unknown name, listing the valid ones.
      TypeError: for anything that is neither a string nor a callable.
    """
    if callable(loss):
        return loss
    if not isinstance(loss, str):
        raise TypeError(
            f"loss must be a name {LOSS_NAMES} or a callable, got {type(loss).__name__}"
        )
    if loss not in _LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid names are {', '.join(LOSS_NAMES)}")
    return _LOSSES[loss]
