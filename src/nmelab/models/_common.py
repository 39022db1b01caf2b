"""Helpers shared by the model families: activation lookup, input layout, BatchNorm policy."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import flax.linen as nn
import jax

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


def batch_norm(train: bool, axis_name: str | None = None) -> Callable[..., nn.BatchNorm]:
    """A BatchNorm constructor with the library-wide policy (see :mod:`nmelab.models`)."""
    return partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        axis_name=axis_name,
    )


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
