"""ResNet-18/50 (He et al., 2016) with the initialisation of Goyal et al. (2017), activation configurable.

The architecture is that of flax ``examples/imagenet``. Initialisation, as Goyal et al. §5.1 for
ResNet-50 on ImageNet: convolutions He-normal (``std = √(2 / fan_out)``, He et al. 2015, as
torchvision's ResNet), the last BN γ of every residual block 0 (each block starts as the identity),
and the 1000-way fully-connected layer from ``N(0, 0.01²)`` with zero bias. Goyal's BN statistics
over 32 images per worker are the model option ``bn_batch=32`` (:class:`~nmelab.models._common.
GhostBatchNorm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nmelab.models._common import activation_fn, batch_norm, require_train

__all__ = [
    "HEAD_INIT_STDDEV",
    "BottleneckResNetBlock",
    "ResNet",
    "ResNet18",
    "ResNet50",
    "ResNetBlock",
]

# all convolutions are bias-free (BatchNorm supplies the shift) and He-normal (fan-out)
_conv = partial(nn.Conv, kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))

_ZEROS = nn.initializers.zeros_init()  # the last BN γ of a block: the block starts as the identity

# BN layers are named explicitly (flax's automatic names would follow the class), so a model with
# ghost BatchNorm (bn_batch) has the same variables as one without and checkpoints load in either.

HEAD_INIT_STDDEV = 0.01
"""Standard deviation of the fully-connected layer's initial weights (Goyal et al. 2017, §5.1)."""


class ResNetBlock(nn.Module):
    """Basic block: two 3x3 convolutions; the last BN scale starts at zero (block = identity)."""

    filters: int
    act: Any
    norm: Any
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to ``(N, H, W, C)`` features."""
        residual = x
        y = _conv(self.filters, (3, 3), self.strides, use_bias=False)(x)
        y = self.act(self.norm(name="BatchNorm_0")(y))
        y = _conv(self.filters, (3, 3), use_bias=False)(y)
        y = self.norm(scale_init=_ZEROS, name="BatchNorm_1")(y)
        if residual.shape != y.shape:
            residual = _conv(self.filters, (1, 1), self.strides, use_bias=False, name="conv_proj")(
                residual
            )
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


class BottleneckResNetBlock(nn.Module):
    """Bottleneck block: 1x1, 3x3 (strided), 1x1 with 4x expansion; last BN scale starts at zero."""

    filters: int
    act: Any
    norm: Any
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply the block to ``(N, H, W, C)`` features."""
        residual = x
        y = _conv(self.filters, (1, 1), use_bias=False)(x)
        y = self.act(self.norm(name="BatchNorm_0")(y))
        y = _conv(self.filters, (3, 3), self.strides, use_bias=False)(y)
        y = self.act(self.norm(name="BatchNorm_1")(y))
        y = _conv(self.filters * 4, (1, 1), use_bias=False)(y)
        y = self.norm(scale_init=_ZEROS, name="BatchNorm_2")(y)
        if residual.shape != y.shape:
            residual = _conv(
                self.filters * 4, (1, 1), self.strides, use_bias=False, name="conv_proj"
            )(residual)
            residual = self.norm(name="norm_proj")(residual)
        return self.act(residual + y)


_BLOCKS = {"basic": ResNetBlock, "bottleneck": BottleneckResNetBlock}


class ResNet(nn.Module):
    """ResNet for ``(N, H, W, C)`` images.

    ``stem -> stages of blocks (stage i has num_filters * 2**i filters, stride 2 at the start of
    every stage after the first) -> global average pool -> dense``. The ``"imagenet"`` stem is a
    7x7/2 convolution, BN, σ and a 3x3/2 max-pool; the ``"cifar"`` stem is a single 3x3/1
    convolution, BN and σ (for 32x32 inputs). ResNet-50 has 25,557,032 parameters at 1000 classes.

    Attributes:
      stage_sizes: number of blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
      block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50 and deeper).
      num_classes: number of outputs.
      num_filters: filters of the first stage.
      stem: ``"imagenet"`` or ``"cifar"``.
      activation: name for :func:`nmelab.activations.get` (replaces every ReLU).
      activation_params: ``(key, value)`` pairs for the activation.
      bn_axis_name: axis name over which BatchNorm averages statistics.
      bn_batch: ``None`` (BN statistics over the whole batch) or the number of consecutive examples
        per statistics group (ghost BatchNorm; Goyal et al.'s 32 images per worker). The batch must
        be a multiple of it in train mode.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: str = "basic"
    num_classes: int = 1000
    num_filters: int = 64
    stem: str = "imagenet"
    activation: str = "relu"
    activation_params: Any = ()
    bn_axis_name: str | None = None
    bn_batch: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool | None = None) -> jax.Array:
        """Return ``(N, num_classes)`` logits; ``train`` must be given (BatchNorm)."""
        if self.block not in _BLOCKS:
            raise ValueError(f"block: expected one of {sorted(_BLOCKS)}, got {self.block!r}")
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem: expected 'imagenet' or 'cifar', got {self.stem!r}")
        if x.ndim != 4:
            raise ValueError(f"x: expected (N, H, W, C) images, got shape {tuple(x.shape)}")
        act = activation_fn(self.activation, self.activation_params)
        norm = batch_norm(require_train(train, "ResNet"), self.bn_axis_name, self.bn_batch)
        if self.stem == "imagenet":
            x = _conv(
                self.num_filters,
                (7, 7),
                (2, 2),
                padding=[(3, 3), (3, 3)],
                use_bias=False,
                name="conv_init",
            )(x)
            x = act(norm(name="bn_init")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        else:
            x = _conv(self.num_filters, (3, 3), padding="SAME", use_bias=False, name="conv_init")(x)
            x = act(norm(name="bn_init")(x))
        block_cls = _BLOCKS[self.block]
        for i, block_size in enumerate(self.stage_sizes):
            for j in range(block_size):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = block_cls(self.num_filters * 2**i, act, norm, strides=strides)(x)
        x = jnp.mean(x, axis=(1, 2))
        head_init = nn.initializers.normal(HEAD_INIT_STDDEV)
        return nn.Dense(self.num_classes, kernel_init=head_init, name="head")(x)


def ResNet18(**kwargs: Any) -> ResNet:  # noqa: N802 (constructor-style name, as in flax examples)
    """ResNet-18: basic blocks, stages ``(2, 2, 2, 2)``."""
    return ResNet(**{"stage_sizes": (2, 2, 2, 2), "block": "basic", **kwargs})


def ResNet50(**kwargs: Any) -> ResNet:  # noqa: N802
    """ResNet-50: bottleneck blocks, stages ``(3, 4, 6, 3)``."""
    return ResNet(**{"stage_sizes": (3, 4, 6, 3), "block": "bottleneck", **kwargs})
