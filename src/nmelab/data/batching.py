"""Deterministic epoch batching and CIFAR-style augmentation, pure functions of ``(key, epoch)``.

Every random choice of epoch ``e`` derives from ``jax.random.fold_in(key, e)``, split into a
permutation key and an augmentation key (:func:`epoch_keys`); batch ``s`` of the epoch augments with
``fold_in(augmentation_key, s)``. So the batches of epoch ``e`` depend on nothing but
``(key, e)``, and resuming at epoch ``e``, step ``s`` (``start_step=s``) reproduces the
uninterrupted run exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nmelab import validation
from nmelab.data.dataset import Dataset

__all__ = [
    "AugmentFn",
    "batches",
    "epoch_batches",
    "epoch_keys",
    "epoch_permutation",
    "eval_batches",
    "num_batches",
    "random_crop_flip",
]

AugmentFn = Callable[[Any, jax.Array], Any]
"""``augment_fn(x_batch, key) -> x_batch``."""


def epoch_keys(key: jax.Array, epoch: int) -> tuple[jax.Array, jax.Array]:
    """Return ``(permutation_key, augmentation_key)`` of epoch ``epoch``."""
    permutation_key, augmentation_key = jax.random.split(jax.random.fold_in(key, epoch))
    return permutation_key, augmentation_key


def epoch_permutation(num_examples: int, key: jax.Array, epoch: int | jax.Array) -> jax.Array:
    """The order in which epoch ``epoch`` visits the ``num_examples`` examples.

    Pure jax: usable inside ``jit``/``vmap`` (``num_examples`` static), and identical to the order
    :func:`batches` uses.
    """
    return jax.random.permutation(epoch_keys(key, epoch)[0], num_examples)


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Number of batches per epoch.

    Raises:
      TypeError, ValueError: ``batch_size`` is not an integer >= 1.
    """
    batch_size = validation.check_count(batch_size, "batch_size")
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def batches(
    x: Any,
    y: Any,
    batch_size: int,
    key: jax.Array,
    epoch: int = 0,
    *,
    augment_fn: AugmentFn | None = None,
    drop_remainder: bool = True,
    start_step: int = 0,
) -> Iterator[tuple[Any, Any]]:
    """Yield the shuffled ``(x, y)`` batches of one epoch, as numpy arrays.

    Args:
      x: ``(N, ...)`` inputs (numpy or jax array).
      y: ``(N,)`` labels.
      batch_size: examples per batch.
      key: ``jax.random`` key of the run; the epoch's keys come from :func:`epoch_keys`.
      epoch: epoch index.
      augment_fn: optional ``augment_fn(x_batch, key)``, called with ``fold_in(aug_key, step)``;
        its output (e.g. a jax array from :func:`random_crop_flip`) is yielded as ``x``.
      drop_remainder: drop the last incomplete batch (keeps every batch shape equal for ``jit``).
      start_step: first batch to yield, to resume mid-epoch.

    Raises:
      ValueError: mismatched lengths, ``batch_size < 1`` or ``start_step`` out of range.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x, y: expected the same length, got {len(x)} and {len(y)}")
    total = num_batches(len(y), batch_size, drop_remainder)
    if not 0 <= start_step <= total:
        raise ValueError(f"start_step: expected 0..{total}, got {start_step}")
    permutation_key, augmentation_key = epoch_keys(key, epoch)
    order = np.asarray(jax.random.permutation(permutation_key, len(y)))
    for step in range(start_step, total):
        idx = order[step * batch_size : (step + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        if augment_fn is not None:
            xb = augment_fn(xb, jax.random.fold_in(augmentation_key, step))
        yield xb, yb


def epoch_batches(
    dataset: Dataset,
    batch_size: int,
    key: jax.Array,
    epoch: int,
    *,
    augment_fn: AugmentFn | None = None,
    drop_remainder: bool = True,
    start_step: int = 0,
) -> Iterator[tuple[Any, Any]]:
    """:func:`batches` over ``dataset``'s training split: a pure function of ``(key, epoch)``."""
    return batches(
        dataset.x_train,
        dataset.y_train,
        batch_size,
        key,
        epoch,
        augment_fn=augment_fn,
        drop_remainder=drop_remainder,
        start_step=start_step,
    )


def eval_batches(x: Any, y: Any, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x, y)`` in order, keeping the last partial batch (for evaluation)."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x, y: expected the same length, got {len(x)} and {len(y)}")
    for step in range(num_batches(len(y), batch_size, drop_remainder=False)):
        yield (
            x[step * batch_size : (step + 1) * batch_size],
            y[step * batch_size : (step + 1) * batch_size],
        )


@partial(jax.jit, static_argnames=("padding", "flip"))
def random_crop_flip(
    x: jax.Array, key: jax.Array, padding: int = 4, flip: bool = True
) -> jax.Array:
    """CIFAR augmentation: reflect-pad by ``padding`` pixels, random crop back, random horizontal flip.

    Zagoruyko & Komodakis (2016, §3): "random crops from image padded by 4 pixels on each side,
    filling missing pixels with reflections of original image" - a mirror without repeating the
    edge pixel (``numpy.pad(mode="reflect")``), so the border carries image content, not a flat
    colour. Each image of the ``(N, H, W, C)`` batch gets its own crop offset (uniform in
    ``0..2 * padding`` per axis) and a flip with probability 1/2, all drawn from ``key``: a pure
    jax function, jittable and deterministic. A padding wider than the image reflects again, as
    ``numpy.pad`` does.
    """
    if x.ndim != 4:
        raise ValueError(f"x: expected (N, H, W, C) images, got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding: expected >= 0 pixels, got {padding}")
    n, h, w, c = x.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * padding + 1)
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="reflect")
    out = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))(
        padded, offsets
    )
    if flip:
        mirrored = jax.random.bernoulli(flip_key, 0.5, (n,))
        out = jnp.where(mirrored[:, None, None, None], out[:, :, ::-1, :], out)
    return out
