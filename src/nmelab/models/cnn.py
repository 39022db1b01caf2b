"""Small convolutional networks for 1D signals (MNIST-1D) and images, plain and residual."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nmelab.models._common import activation_fn, as_tuple, batch_norm, channels_last, require_train


class CNN(nn.Module):
    """Plain CNN: ``[conv -> (BN) -> σ] x depth -> global average pool -> [dense -> σ]* -> dense``.

    Works for 1D signals and 2D images alike; the number of spatial axes is read from the input
    (see :func:`nmelab.models._common.channels_last`: ``(N, L)`` is treated as ``(N, L, 1)``).
    Convolutions use ``SAME`` padding; with ``use_bn`` they carry no bias (BN supplies it).

    Attributes:
      channels: output channels of each conv layer; its length is the depth.
      num_classes: number of outputs.
      kernel_size: kernel extent along every spatial axis.
      strides: one stride for every layer or one per layer.
      hidden: widths of dense layers between the pooled features and the output layer.
      use_bn: BatchNorm after every convolution (policy in :mod:`nmelab.models`).
      activation: name for :func:`nmelab.activations.get`.
      activation_params: ``(key, value)`` pairs for the activation.
      bn_axis_name: axis name over which BatchNorm averages statistics (``shard_map``/``pmap``).
    """

    channels: Sequence[int] = (32, 32, 32)
    num_classes: int = 10
    kernel_size: int = 5
    strides: int | Sequence[int] = 1
    hidden: Sequence[int] = ()
    use_bn: bool = False
    activation: str = "relu"
    activation_params: Any = ()
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool | None = None) -> jax.Array:
        """Return ``(N, num_classes)`` logits. ``train`` is required when ``use_bn``."""
        act = activation_fn(self.activation, self.activation_params)
        x = channels_last(x)
        spatial = x.ndim - 2
        strides = as_tuple(self.strides, len(self.channels), "strides")
        if self.use_bn:
            norm = batch_norm(require_train(train, "CNN(use_bn=True)"), self.bn_axis_name)
        for i, (width, stride) in enumerate(zip(self.channels, strides, strict=True)):
            x = nn.Conv(
                width,
                (self.kernel_size,) * spatial,
                strides=(stride,) * spatial,
                padding="SAME",
                use_bias=not self.use_bn,
                name=f"conv_{i}",
            )(x)
            if self.use_bn:
                x = norm(name=f"bn_{i}")(x)
            x = act(x)
        x = jnp.mean(x, axis=tuple(range(1, 1 + spatial)))
        for i, width in enumerate(self.hidden):
            x = act(nn.Dense(width, name=f"dense_{i}")(x))
        return nn.Dense(self.num_classes, name="head")(x)


class _ResidualBlock(nn.Module):
    """Post-activation basic block ``σ(x' + BN(conv(σ(BN(conv(x))))))`` (He et al., 2016)."""

    width: int
    kernel_size: int
    act: Any
    norm: Any
    use_bn: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        spatial = x.ndim - 2
        kernel = (self.kernel_size,) * spatial
        y = nn.Conv(self.width, kernel, padding="SAME", use_bias=not self.use_bn, name="conv_0")(x)
        if self.use_bn:
            y = self.norm(name="bn_0")(y)
        y = self.act(y)
        y = nn.Conv(self.width, kernel, padding="SAME", use_bias=not self.use_bn, name="conv_1")(y)
        if self.use_bn:
            y = self.norm(name="bn_1")(y)
        if x.shape[-1] != self.width:
            x = nn.Conv(self.width, (1,) * spatial, use_bias=not self.use_bn, name="conv_proj")(x)
            if self.use_bn:
                x = self.norm(name="bn_proj")(x)
        return self.act(x + y)


class ResCNN(nn.Module):
    """Residual CNN with BatchNorm for 1D signals (or images), stride 1 throughout.

    ``conv -> BN -> σ -> [basic block] x len(widths) -> global average pool -> dense``; each
    basic block holds two convolutions, so ``widths=(64, 64, 64)`` gives 6 block convolutions plus
    the stem (the pilot's suggestion for making the paper's BN-ResNet effects show on MNIST-1D).

    Attributes:
      widths: channels of each residual block (a 1x1 projection is added when the width changes).
      num_classes: number of outputs.
      stem_width: channels of the stem convolution; ``None`` uses ``widths[0]``.
      kernel_size: kernel extent along every spatial axis.
      use_bn: BatchNorm after every convolution.
      activation: name for :func:`nmelab.activations.get`.
      activation_params: ``(key, value)`` pairs for the activation.
      bn_axis_name: axis name over which BatchNorm averages statistics.
    """

    widths: Sequence[int] = (64, 64, 64)
    num_classes: int = 10
    stem_width: int | None = None
    kernel_size: int = 3
    use_bn: bool = True
    activation: str = "relu"
    activation_params: Any = ()
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool | None = None) -> jax.Array:
        """Return ``(N, num_classes)`` logits. ``train`` is required when ``use_bn``."""
        act = activation_fn(self.activation, self.activation_params)
        x = channels_last(x)
        spatial = x.ndim - 2
        norm = None
        if self.use_bn:
            norm = batch_norm(require_train(train, "ResCNN"), self.bn_axis_name)
        stem = self.widths[0] if self.stem_width is None else self.stem_width
        x = nn.Conv(
            stem,
            (self.kernel_size,) * spatial,
            padding="SAME",
            use_bias=not self.use_bn,
            name="conv_stem",
        )(x)
        if self.use_bn:
            x = norm(name="bn_stem")(x)
        x = act(x)
        for i, width in enumerate(self.widths):
            x = _ResidualBlock(width, self.kernel_size, act, norm, self.use_bn, name=f"block_{i}")(
                x
            )
        x = jnp.mean(x, axis=tuple(range(1, 1 + spatial)))
        return nn.Dense(self.num_classes, name="head")(x)
