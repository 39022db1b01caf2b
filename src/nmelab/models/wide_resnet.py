"""Wide residual network with pre-activation blocks (Zagoruyko & Komodakis, 2016)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nmelab.models._common import activation_fn, batch_norm, require_train

__all__ = ["WideResNet"]

_he_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class _WideBlock(nn.Module):
    """Pre-activation block: ``o = σ(BN(x)); z = conv(σ(BN(conv_s(o)))); return z + shortcut``.

    The shortcut is ``x`` when shapes agree, otherwise a strided 1x1 convolution of ``o`` (the
    activated input), as in the reference implementation.
    """

    width: int
    stride: int
    dropout_rate: float
    act: Any
    norm: Any
    train: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        o = self.act(self.norm(name="bn_0")(x))
        s = (self.stride, self.stride)
        y = nn.Conv(
            self.width, (3, 3), s, padding=1, use_bias=False, kernel_init=_he_fan_out, name="conv_0"
        )(o)
        y = self.act(self.norm(name="bn_1")(y))
        if self.dropout_rate > 0:
            y = nn.Dropout(self.dropout_rate, deterministic=not self.train)(y)
        y = nn.Conv(
            self.width, (3, 3), padding=1, use_bias=False, kernel_init=_he_fan_out, name="conv_1"
        )(y)
        if x.shape[-1] != self.width or self.stride != 1:
            x = nn.Conv(
                self.width, (1, 1), s, use_bias=False, kernel_init=_he_fan_out, name="conv_proj"
            )(o)
        return x + y


class WideResNet(nn.Module):
    """WRN-``depth``-``width`` for ``(N, H, W, C)`` images, e.g. CIFAR-10 at 32x32x3.

    ``conv3x3(16) -> 3 groups of n = (depth - 4) / 6 blocks with 16k, 32k, 64k channels (strides
    1, 2, 2) -> BN -> σ -> global average pool -> dense``. Convolutions have no bias and He
    (fan-out) initialisation. WRN-28-10 has 36,479,194 parameters on CIFAR-10, WRN-16-4 2,748,890.

    Attributes:
      depth: total depth; ``depth - 4`` must be divisible by 6.
      width: widening factor ``k``.
      num_classes: number of outputs.
      dropout_rate: dropout between the two convolutions of a block (Zagoruyko & Komodakis 2016
        report WRN-28-10 on CIFAR-10 with 0 and with 0.3); when positive, training needs a
        ``'dropout'`` rng (``apply(..., rngs={'dropout': key})``).
      activation: name for :func:`nmelab.activations.get` (replaces every ReLU).
      activation_params: ``(key, value)`` pairs for the activation.
      bn_axis_name: axis name over which BatchNorm averages statistics.
      bn_batch: ``None`` (BN statistics over the whole batch) or the examples per statistics group
        (ghost BatchNorm, :class:`~nmelab.models._common.GhostBatchNorm`).
    """

    depth: int = 28
    width: int = 10
    num_classes: int = 10
    dropout_rate: float = 0.0
    activation: str = "relu"
    activation_params: Any = ()
    bn_axis_name: str | None = None
    bn_batch: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool | None = None) -> jax.Array:
        """Return ``(N, num_classes)`` logits; ``train`` must be given (BatchNorm)."""
        if (self.depth - 4) % 6 != 0 or self.depth < 10:
            raise ValueError(f"depth: expected 6n + 4 with n >= 1, got {self.depth}")
        if x.ndim != 4:
            raise ValueError(f"x: expected (N, H, W, C) images, got shape {tuple(x.shape)}")
        train = require_train(train, "WideResNet")
        act = activation_fn(self.activation, self.activation_params)
        norm = batch_norm(train, self.bn_axis_name, self.bn_batch)
        n = (self.depth - 4) // 6
        x = nn.Conv(
            16, (3, 3), padding=1, use_bias=False, kernel_init=_he_fan_out, name="conv_init"
        )(x)
        for g, (channels, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
            for b in range(n):
                x = _WideBlock(
                    channels * self.width,
                    stride if b == 0 else 1,
                    self.dropout_rate,
                    act,
                    norm,
                    train,
                    name=f"group_{g}_block_{b}",
                )(x)
        x = act(norm(name="bn_final")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)
