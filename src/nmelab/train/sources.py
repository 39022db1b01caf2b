"""Where a run's batches come from: the device-resident training set or a host loader.

* :class:`ArraySource` wraps an in-memory :class:`nmelab.data.Dataset` (digits, mnist1d,
  synthetic, cifar10). With ``on_device`` the arrays are put on the device once and the train step
  gathers batches by index (required for several seeds); otherwise the host slices the batches of
  :func:`nmelab.data.batches` (the same order) and feeds them one per step.
* :class:`FolderSource` wraps an :class:`nmelab.data.ImageFolder` (ImageNet): JPEGs decoded per batch
  by :func:`nmelab.data.image_batches` (random-resized crop and flip for training, centre crop for
  evaluation), always host-fed.

Both give the same batch sequence after a resume: the order of epoch ``e`` is a pure function of
``(data_key, e)``, and ``start_step`` skips the batches already taken.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from nmelab import data as nmedata

IN_MEMORY_ON_DEVICE = ("digits", "mnist1d", "synthetic")
"""Datasets kept on the device by default (``data_on_device=None``)."""


class ArraySource:
    """An in-memory dataset, on the device or fed from the host.

    Attributes:
      dataset: the dataset.
      on_device: whether the train step gathers its batches on the device.
      augmentable: images ``(N, H, W, C)``: the step may apply random crop + flip.
      x_train, y_train: the training set as device arrays (``on_device`` only).
    """

    def __init__(self, dataset: nmedata.Dataset, on_device: bool):
        self.dataset = dataset
        self.on_device = on_device
        self.name = dataset.name
        self.num_classes = int(dataset.num_classes)
        self.num_train = int(dataset.num_train)
        self.num_test = int(dataset.num_test)
        self.input_shape = tuple(dataset.input_shape)
        self.augmentable = len(self.input_shape) == 3
        if on_device:
            self.x_train = jax.device_put(np.asarray(dataset.x_train))
            self.y_train = jax.device_put(np.asarray(dataset.y_train))

    def train_batches(
        self, batch_size: int, key: jax.Array, epoch: int, start_step: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Host batches of epoch ``epoch`` from ``start_step`` (un-augmented; the step augments)."""
        return nmedata.batches(
            self.dataset.x_train,
            self.dataset.y_train,
            batch_size,
            key,
            epoch,
            start_step=start_step,
        )

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of the ``"train"`` or ``"test"`` split in order, the last one partial."""
        x = self.dataset.x_train if split == "train" else self.dataset.x_test
        y = self.dataset.y_train if split == "train" else self.dataset.y_test
        return nmedata.eval_batches(x, y, batch_size)

    def probe_batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``size`` training examples (un-augmented): the fixed curvature probe batch."""
        size = min(size, self.num_train)
        return np.asarray(self.dataset.x_train[:size]), np.asarray(self.dataset.y_train[:size])


class FolderSource:
    """An image folder decoded per batch on the host (ImageNet)."""

    def __init__(
        self,
        folder: nmedata.ImageFolder,
        image_size: int = 224,
        num_workers: int = 0,
        resize_size: int | None = None,
    ):
        self.folder = folder
        self.on_device = False
        self.augmentable = False  # the loader augments
        self.name = folder.name
        self.num_classes = int(folder.num_classes)
        self.num_train = int(folder.num_train)
        self.num_test = int(folder.num_test)
        self.image_size = int(image_size)
        self.resize_size = int(resize_size or round(image_size * 256 / 224))
        self.input_shape = (self.image_size, self.image_size, 3)
        self.num_workers = int(num_workers)

    def _options(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "resize_size": self.resize_size,
            "num_workers": self.num_workers,
        }

    def train_batches(
        self, batch_size: int, key: jax.Array, epoch: int, start_step: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Decoded, augmented training batches of epoch ``epoch`` from ``start_step``."""
        return nmedata.image_batches(
            self.folder,
            batch_size,
            key,
            epoch,
            split="train",
            start_step=start_step,
            **self._options(),
        )

    def _eval_folder(self, split: str, limit: int | None = None) -> nmedata.ImageFolder:
        if split == "test" and limit is None:
            return self.folder
        files, labels = self.folder.train_files, self.folder.y_train
        if limit is not None:
            files, labels = files[:limit], labels[:limit]
        return dataclasses.replace(self.folder, test_files=tuple(files), y_test=labels)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Centre-cropped batches of ``split`` in file order, the last one partial."""
        return nmedata.image_batches(
            self._eval_folder(split),
            batch_size,
            jax.random.PRNGKey(0),
            split="test",
            **self._options(),
        )

    def probe_batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``size`` training images, centre-cropped (the fixed curvature probe batch)."""
        folder = self._eval_folder("train", min(size, self.num_train))
        return next(
            nmedata.image_batches(
                folder, size, jax.random.PRNGKey(0), split="test", **self._options()
            )
        )


def make_source(
    dataset: nmedata.Dataset | nmedata.ImageFolder,
    on_device: bool | None,
    image_size: int = 224,
    num_workers: int = 0,
    resize_size: int | None = None,
) -> ArraySource | FolderSource:
    """Wrap a loaded dataset; ``on_device=None`` chooses per :data:`IN_MEMORY_ON_DEVICE`.

    ``image_size`` (crop side), ``resize_size`` (evaluation resize, default ``image_size`` x
    256/224) and ``num_workers`` (decoding processes) apply to image folders only.

    Raises:
      ValueError: ``on_device=True`` for an image folder (it is decoded per batch on the host).
    """
    if isinstance(dataset, nmedata.ImageFolder):
        if on_device:
            raise ValueError(
                "data_on_device: an image folder (imagenet) is decoded per batch on the host; "
                "set data_on_device=None or False"
            )
        return FolderSource(dataset, image_size, num_workers, resize_size)
    if on_device is None:
        on_device = dataset.name in IN_MEMORY_ON_DEVICE
    return ArraySource(dataset, bool(on_device))
