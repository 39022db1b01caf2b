"""Multi-layer perceptron."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from nmelab.models._common import activation_fn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected network ``z = W_L σ(... σ(W_1 vec(x) + b_1) ...) + b_L``.

    The input is flattened to ``(N, -1)``, so images and 1D signals both work.

    Attributes:
      features: widths of the hidden layers, e.g. ``(256, 256)``.
      num_classes: number of outputs.
      activation: name for :func:`nmelab.activations.get`.
      activation_params: ``(key, value)`` pairs passed to the activation, e.g. ``(("beta", 3.0),)``.
    """

    features: Sequence[int] = (256, 256)
    num_classes: int = 10
    activation: str = "relu"
    activation_params: Any = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool | None = None) -> jax.Array:
        """Return ``(N, num_classes)`` logits; ``train`` is accepted and ignored (no BatchNorm)."""
        del train
        act = activation_fn(self.activation, self.activation_params)
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.features):
            x = act(nn.Dense(width, name=f"dense_{i}")(x))
        return nn.Dense(self.num_classes, name="head")(x)
