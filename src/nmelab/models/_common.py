"""Helpers shared by the model families: activation lookup, input layout, BatchNorm policy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nmelab import activations

BN_MOMENTUM = 0.9
"""Running-statistics momentum of every BatchNorm layer in :mod:`nmelab.models`."""

BN_EPSILON = 1e-5
"""Variance epsilon of every BatchNorm layer in :mod:`nmelab.models`."""


def freeze_activation_params(params: Any) -> tuple[tuple[str, Any], ...]:
    """Return activation parameters as a sorted tuple of ``(key, value)`` pairs (hashable for flax).

    Args:
      params: ``None``, a mapping such as ``{"beta": 3.0}``, or an iterable of ``(key, value)``
        pairs.

    Raises:
      TypeError: if ``params`` is none of these.
    """
    if params is None:
        return ()
    if isinstance(params, Mapping):
        items = params.items()
    else:
        try:
            items = [tuple(item) for item in params]
        except TypeError as err:
            raise TypeError(
                "activation_params: expected a mapping or a tuple of (key, value) pairs, "
                f"got {type(params).__name__}"
            ) from err
        if any(len(item) != 2 or not isinstance(item[0], str) for item in items):
            raise TypeError(
                f"activation_params: expected (key, value) pairs with string keys, got {params!r}"
            )
    return tuple(sorted((str(k), v) for k, v in items))


def activation_fn(name: str, params: Any) -> Callable[[jax.Array], jax.Array]:
    """Resolve ``(activation, activation_params)`` module fields through :func:`activations.get`."""
    return activations.get(name, **dict(freeze_activation_params(params)))


def require_train(train: bool | None, model: str) -> bool:
    """Return ``train`` as a bool, refusing ``None`` for a model that has BatchNorm.

    A BatchNorm model silently behaves very differently in the two modes (batch statistics and
    running-statistics updates versus frozen running statistics), so the mode must be explicit.
    """
    if train is None:
        raise ValueError(
            f"{model} has BatchNorm: pass train=True (batch statistics, updates 'batch_stats'; "
            "apply with mutable=['batch_stats']) or train=False (running statistics)"
        )
    return bool(train)


def batch_norm(
    train: bool, axis_name: str | None = None, bn_batch: int | None = None
) -> Callable[..., nn.Module]:
    """A BatchNorm constructor with the library-wide policy (see :mod:`nmelab.models`).

    Args:
      train: batch statistics (and running-statistics updates) if true, running statistics if not.
      axis_name: mapped axis over which train-mode statistics are averaged (``None``: none).
      bn_batch: ``None`` for statistics over the whole batch, or the group size of
        :class:`GhostBatchNorm` (statistics over each group of ``bn_batch`` consecutive examples).

    Raises:
      ValueError: ``bn_batch`` is not a positive integer, or is combined with ``axis_name``.
    """
    if bn_batch is None:
        return partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            axis_name=axis_name,
        )
    if isinstance(bn_batch, bool) or not isinstance(bn_batch, int) or bn_batch < 1:
        raise ValueError(f"bn_batch: expected None or an integer >= 1, got {bn_batch!r}")
    if axis_name is not None:
        raise ValueError(
            f"bn_batch={bn_batch} (ghost batches) and bn_axis_name={axis_name!r} (statistics "
            "averaged over devices) contradict each other; set one of them"
        )
    return partial(GhostBatchNorm, bn_batch=bn_batch, use_running_average=not train)


class GhostBatchNorm(nn.Module):
    """BatchNorm whose train-mode statistics are those of each group of ``bn_batch`` examples.

    Goyal et al. (2017, §2.3, §5.1) compute BN statistics over the ``n = 32`` images of each worker,
    whatever the total batch ``kn``, and call ``n`` part of the loss function: the batch-coupled
    function changes with it. On one device with a batch ``B`` this is "ghost" BatchNorm: the batch
    is cut into ``B / bn_batch`` groups of *consecutive* examples, and example ``i`` of group ``j``
    is normalised with the mean and (biased) variance of group ``j`` over the batch and spatial
    axes, per channel::

        y = γ · (x − μ_j) / √(σ²_j + ε) + β.

    The running statistics are updated with the mean over groups of ``μ_j`` and of ``σ²_j`` (the
    average worker statistics), with the library's momentum and ε; eval mode uses them exactly as
    :class:`flax.linen.BatchNorm` does. Parameter and statistic names (``scale``, ``bias``,
    ``mean``, ``var``) are those of :class:`flax.linen.BatchNorm`, so checkpoints are interchangeable;
    with ``bn_batch`` equal to the batch it computes the same function.

    Trap: the groups are consecutive rows, so the data pipeline must shuffle (a sorted batch would
    give groups of one class), and a batch that is not a multiple of ``bn_batch`` is refused in
    train mode rather than normalising a short last group.

    Attributes:
      bn_batch: examples per statistics group.
      use_running_average: eval mode (running statistics) if true.
      scale_init: initialiser of γ (``zeros`` for the last BN of a residual block).
    """

    bn_batch: int
    use_running_average: bool
    scale_init: Callable[..., jax.Array] = nn.initializers.ones_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalise ``(N, ..., C)`` features over the batch and middle axes, per channel."""
        features = x.shape[-1]
        dtype = jnp.promote_types(x.dtype, jnp.float32)
        scale = self.param("scale", self.scale_init, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        x = x.astype(dtype)
        if self.use_running_average:
            y = (x - ra_mean.value) * jax.lax.rsqrt(ra_var.value + BN_EPSILON)
        else:
            num = x.shape[0]
            if num % self.bn_batch:
                raise ValueError(
                    f"bn_batch: the batch of {num} examples is not a multiple of bn_batch="
                    f"{self.bn_batch} (ghost BatchNorm statistics groups)"
                )
            groups = x.reshape(num // self.bn_batch, self.bn_batch, *x.shape[1:])
            axes = tuple(range(1, groups.ndim - 1))
            mean = jnp.mean(groups, axis=axes, keepdims=True)
            var = jnp.mean(jnp.square(groups - mean), axis=axes, keepdims=True)
            y = ((groups - mean) * jax.lax.rsqrt(var + BN_EPSILON)).reshape(x.shape)
            if not self.is_initializing():
                group_mean = jnp.mean(mean.reshape(-1, features), axis=0)
                group_var = jnp.mean(var.reshape(-1, features), axis=0)
                ra_mean.value = BN_MOMENTUM * ra_mean.value + (1 - BN_MOMENTUM) * group_mean
                ra_var.value = BN_MOMENTUM * ra_var.value + (1 - BN_MOMENTUM) * group_var
        return y * scale.astype(dtype) + bias.astype(dtype)


def channels_last(x: jax.Array) -> jax.Array:
    """Give a convolution input an explicit channel axis.

    ``(N, L)`` becomes ``(N, L, 1)`` (a 1D signal such as MNIST-1D); ``(N, L, C)`` is a 1D signal
    with ``C`` channels; ``(N, H, W, C)`` is an image. A grey-scale image must therefore carry its
    channel axis, ``(N, H, W, 1)``, or it would be read as a 1D signal with ``W`` channels.
    """
    if x.ndim == 2:
        return x[..., None]
    if x.ndim in (3, 4):
        return x
    raise ValueError(
        "x: expected (N, L), (N, L, C) or (N, H, W, C) for a convolutional model, "
        f"got shape {tuple(x.shape)}"
    )


def as_tuple(value: int | tuple[int, ...] | list[int], length: int, name: str) -> tuple[int, ...]:
    """Broadcast an int to ``length`` entries, or check a sequence has ``length`` entries."""
    if isinstance(value, int):
        return (value,) * length
    value = tuple(value)
    if len(value) != length:
        raise ValueError(f"{name}: expected an int or {length} entries, got {value!r}")
    return value
