"""Where a run's batches come from: one iterator interface for device-held and host-fed data.

Every source has

* ``train_batches(data_keys, start_step)``: an endless iterator of *batch descriptions*, one per
  optimizer step from ``start_step`` on. A description is a pytree whose every leaf has the seed
  axis first (``S`` seeds); it is what the compiled step receives.
* ``arrays``: the device arrays the step reads (the training set of :class:`DeviceSource`, nothing
  for :class:`HostSource`), shared by the seeds and passed to the step as an argument, never
  closed over (a closed-over array would be compiled into the program as a constant);
* ``seed_batch(arrays, description, step)``: inside ``jit``, for one seed, the ``(x, y)`` batch of
  ``step`` (before augmentation) and the epoch's augmentation key.

:class:`DeviceSource` keeps the training set on the device: a description holds the permutations of
a block of epochs, and the step gathers its batch by index (needed for several seeds: one compiled
step trains every seed on its own batch). :class:`HostSource` feeds numpy batches from the host
(one seed): an in-memory dataset sliced in the same order, or an image folder decoded per batch.

Both give the same batches, and the same after a resume: the order of epoch ``e`` is a pure
function of ``(data_key, e)`` (:func:`nmelab.data.epoch_permutation`), so a source started at
``start_step`` continues where the killed run stopped.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nmelab import data as nmedata

__all__ = ["IN_MEMORY_ON_DEVICE", "DeviceSource", "HostSource", "make_source"]

IN_MEMORY_ON_DEVICE = ("digits", "mnist1d", "synthetic")
"""Datasets kept on the device by default (``data_on_device=None``)."""

EPOCH_BLOCK_ELEMENTS = 2**22
"""Permutation entries computed per call (``S`` seeds x ``K`` epochs x ``N`` examples <= this)."""


@functools.partial(jax.jit, static_argnums=(0, 1))
def epoch_block(
    num_train: int, num_epochs: int, data_keys: jax.Array, first_epoch: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Permutations ``(S, K, N)`` and augmentation keys ``(S, K, 2)`` of ``K`` epochs.

    Entry ``[s, k]`` is seed ``s``'s epoch ``first_epoch + k``, as :func:`nmelab.data.epoch_keys`
    and :func:`nmelab.data.epoch_permutation` define it.
    """

    def one(key: jax.Array, epoch: jax.Array) -> tuple[jax.Array, jax.Array]:
        permutation_key, augmentation_key = nmedata.epoch_keys(key, epoch)
        return jax.random.permutation(permutation_key, num_train), augmentation_key

    epochs = first_epoch + jnp.arange(num_epochs)
    return jax.vmap(lambda k: jax.vmap(lambda e: one(k, e))(epochs))(data_keys)


def gathered_batch(
    arrays: tuple[jax.Array, jax.Array],
    description: dict[str, Any],
    step: jax.Array,
    *,
    batch_size: int,
    steps_per_epoch: int,
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """One seed's batch of ``step`` from the device-held training set ``arrays = (x, y)``.

    Examples ``perm[p·B : (p+1)·B]`` of the seed's permutation of epoch ``e``, with
    ``e, p = divmod(step, steps_per_epoch)``; also returns the epoch's augmentation key.
    """
    epoch, position = jnp.divmod(step, steps_per_epoch)
    k = epoch - description["first_epoch"]
    permutation = jax.lax.dynamic_index_in_dim(description["permutations"], k, keepdims=False)
    key = jax.lax.dynamic_index_in_dim(description["augmentation_keys"], k, keepdims=False)
    idx = jax.lax.dynamic_slice_in_dim(permutation, position * batch_size, batch_size)
    x_train, y_train = arrays
    return (jnp.take(x_train, idx, axis=0), jnp.take(y_train, idx, axis=0)), key


def fed_batch(
    arrays: tuple[()], description: dict[str, Any], step: jax.Array
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """One seed's host-fed batch: the description's own ``(x, y)`` and augmentation key."""
    return (description["x"], description["y"]), description["augmentation_key"]


class _Source:
    """What every source knows about its dataset (names, sizes, the evaluation and probe data)."""

    on_device = False
    augmentable = False  # images the step may crop and flip

    def __init__(self, dataset: Any, batch_size: int):
        self.dataset = dataset
        self.name = dataset.name
        self.num_classes = int(dataset.num_classes)
        self.num_train = int(dataset.num_train)
        self.num_test = int(dataset.num_test)
        self.batch_size = int(batch_size)
        self.steps_per_epoch = self.num_train // self.batch_size

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of the ``"train"`` or ``"test"`` split in order, the last one partial."""
        x = self.dataset.x_train if split == "train" else self.dataset.x_test
        y = self.dataset.y_train if split == "train" else self.dataset.y_test
        return nmedata.eval_batches(x, y, batch_size)

    def probe_batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``size`` training examples (un-augmented): the fixed curvature probe batch."""
        size = min(size, self.num_train)
        return np.asarray(self.dataset.x_train[:size]), np.asarray(self.dataset.y_train[:size])


class DeviceSource(_Source):
    """An in-memory dataset on the device; the compiled step gathers each seed's batch by index.

    Attributes:
      x_train, y_train: the training set as device arrays.
    """

    on_device = True

    def __init__(self, dataset: nmedata.Dataset, batch_size: int, num_epochs: int):
        super().__init__(dataset, batch_size)
        self.input_shape = tuple(dataset.input_shape)
        self.augmentable = len(self.input_shape) == 3
        self.num_epochs = int(num_epochs)
        self.x_train = jax.device_put(np.asarray(dataset.x_train))
        self.y_train = jax.device_put(np.asarray(dataset.y_train))

    def train_batches(self, data_keys: jax.Array, start_step: int) -> Iterator[dict[str, Any]]:
        """The same description for every step of a block of ``K`` epochs, one block at a time.

        One call per ``K`` epochs instead of one per epoch: on small data a permutation's cost is
        mostly per-call overhead (0.7 ms for 1,437 examples, 11 digits steps of 0.5 ms).
        """
        num_seeds = len(data_keys)
        size = max(1, min(self.num_epochs, EPOCH_BLOCK_ELEMENTS // (num_seeds * self.num_train)))
        step = start_step
        while True:
            first = step // self.steps_per_epoch
            permutations, keys = epoch_block(self.num_train, size, data_keys, first)
            block = {
                "permutations": permutations,
                "augmentation_keys": keys,
                "first_epoch": jnp.full((num_seeds,), first, jnp.int32),
            }
            for _ in range(step, (first + size) * self.steps_per_epoch):
                yield block
            step = (first + size) * self.steps_per_epoch

    @property
    def arrays(self) -> tuple[jax.Array, jax.Array]:
        """``(x_train, y_train)`` on the device."""
        return self.x_train, self.y_train

    @property
    def seed_batch(self) -> Any:
        """:func:`gathered_batch` with this source's batch size and epoch length."""
        return functools.partial(
            gathered_batch, batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch
        )


class HostSource(_Source):
    """Batches made on the host and fed one per step (one seed): arrays or an image folder.

    For an :class:`nmelab.data.ImageFolder` (ImageNet) the JPEGs are decoded per batch by
    :func:`nmelab.data.image_batches` (random-resized crop and flip for training, centre crop for
    evaluation); ``image_size`` (crop side), ``resize_size`` (evaluation resize, default
    ``image_size`` x 256/224) and ``num_workers`` (decoding processes) apply to it only.
    """

    def __init__(
        self,
        dataset: nmedata.Dataset | nmedata.ImageFolder,
        batch_size: int,
        image_size: int = 224,
        num_workers: int = 0,
        resize_size: int | None = None,
    ):
        super().__init__(dataset, batch_size)
        self.folder = isinstance(dataset, nmedata.ImageFolder)
        if self.folder:
            self.image_options = {
                "image_size": int(image_size),
                "resize_size": int(resize_size or round(image_size * 256 / 224)),
                "num_workers": int(num_workers),
            }
            self.input_shape = (int(image_size), int(image_size), 3)
        else:
            self.input_shape = tuple(dataset.input_shape)
            self.augmentable = len(self.input_shape) == 3  # the loader augments image folders

    def _epoch(self, key: np.ndarray, epoch: int, start: int) -> Iterator[Any]:
        if self.folder:
            return nmedata.image_batches(
                self.dataset, self.batch_size, key, epoch, split="train", start_step=start,
                **self.image_options,
            )  # fmt: skip
        x, y = self.dataset.x_train, self.dataset.y_train
        return nmedata.batches(x, y, self.batch_size, key, epoch, start_step=start)

    def train_batches(self, data_keys: jax.Array, start_step: int) -> Iterator[dict[str, Any]]:
        """One host batch per step, with a seed axis of size 1 (host data trains one seed)."""
        step = start_step
        while True:
            epoch, position = divmod(step, self.steps_per_epoch)
            keys = epoch_block(self.num_train, 1, data_keys, epoch)[1][:, 0]
            for x, y in self._epoch(np.asarray(data_keys[0]), epoch, position):
                yield {"x": x[None], "y": y[None], "augmentation_key": keys}
            step = (epoch + 1) * self.steps_per_epoch

    arrays = ()

    @property
    def seed_batch(self) -> Any:
        """:func:`fed_batch`."""
        return fed_batch

    def _eval_folder(self, split: str, limit: int | None = None) -> nmedata.ImageFolder:
        if split == "test" and limit is None:
            return self.dataset
        files, labels = self.dataset.train_files, self.dataset.y_train
        if limit is not None:
            files, labels = files[:limit], labels[:limit]
        return dataclasses.replace(self.dataset, test_files=tuple(files), y_test=labels)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of ``split`` in order (image folders: centre-cropped), the last one partial."""
        if not self.folder:
            return super().eval_batches(split, batch_size)
        return nmedata.image_batches(
            self._eval_folder(split), batch_size, jax.random.PRNGKey(0), split="test",
            **self.image_options,
        )  # fmt: skip

    def probe_batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``size`` training examples (image folders: centre-cropped), un-augmented."""
        if not self.folder:
            return super().probe_batch(size)
        folder = self._eval_folder("train", min(size, self.num_train))
        return next(
            nmedata.image_batches(
                folder, size, jax.random.PRNGKey(0), split="test", **self.image_options
            )
        )


def make_source(
    dataset: nmedata.Dataset | nmedata.ImageFolder,
    on_device: bool | None,
    batch_size: int,
    num_epochs: int,
    image_size: int = 224,
    num_workers: int = 0,
    resize_size: int | None = None,
) -> DeviceSource | HostSource:
    """The source of a loaded dataset; ``on_device=None`` chooses per :data:`IN_MEMORY_ON_DEVICE`.

    Args:
      dataset: the loaded dataset.
      on_device: keep the training set on the device.
      batch_size: training examples per step (per seed).
      num_epochs: epochs of the run (rounded up): the device source computes at most this many
        epochs' permutations at once.
      image_size: image-folder crop side (see :class:`HostSource`).
      num_workers: image-folder decoding processes.
      resize_size: image-folder evaluation resize.

    Raises:
      ValueError: ``on_device=True`` for an image folder (it is decoded per batch on the host).
    """
    if isinstance(dataset, nmedata.ImageFolder):
        if on_device:
            raise ValueError(
                "config.data_on_device: an image folder (imagenet) is decoded per batch on the "
                "host; set data_on_device=None or False"
            )
        return HostSource(dataset, batch_size, image_size, num_workers, resize_size)
    if on_device is None:
        on_device = dataset.name in IN_MEMORY_ON_DEVICE
    if on_device:
        return DeviceSource(dataset, batch_size, num_epochs)
    return HostSource(dataset, batch_size)
