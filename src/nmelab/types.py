"""Type aliases shared across nmelab."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import jax

__all__ = ["ApplyFn", "Batch", "Key", "LossFn", "Params", "PyTree"]

Params: TypeAlias = Any
"""A pytree of floating-point arrays: the model parameters θ."""

PyTree: TypeAlias = Any
"""Any pytree; for vectors it has the structure and shapes of :data:`Params`."""

Batch: TypeAlias = tuple[Any, Any]
"""``(x, y)``: inputs (an array or pytree with a leading batch axis) and targets."""

ApplyFn: TypeAlias = Callable[[Params, Any], Any]
"""``apply_fn(params, x) -> outputs`` (or ``(outputs, aux)`` for objectives with ``has_aux``)."""

LossFn: TypeAlias = Callable[[jax.Array, Any], jax.Array]
"""``loss_fn(outputs, targets) -> scalar``; nmelab's built-in losses are batch means."""

Key: TypeAlias = jax.Array
"""A ``jax.random`` key."""
