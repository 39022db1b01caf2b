"""Datasets as in-memory numpy arrays, deterministic batching and augmentation.

Datasets (:func:`get` by name; keyword arguments go to the loader):

``digits(num_test=360, seed=0)``
    scikit-learn's ``load_digits``, shipped with scikit-learn (no files needed): 1437 train /
    360 test, inputs ``(N, 64)`` standardised with the training statistics, 10 classes.
``mnist1d(num_train=4000, num_test=1000, seed=42)``
    MNIST-1D generated in memory by the ``mnist1d`` package (no download, no files written;
    about 1 s, cached): inputs ``(N, 40)``, 10 classes.
``synthetic(shape=(8,), num_classes=10, num_train=256, num_test=64, seed=0)``
    Gaussian inputs of any per-example shape with labels from a random linear teacher.
``cifar10(data_dir, normalize=True)``
    CIFAR-10 from a local folder, inputs ``(N, 32, 32, 3)``. Layout, either::

        <data_dir>/cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin, test_batch.bin
        <data_dir>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch

    (``data_dir`` may also be the ``cifar-10-batches-*`` folder itself). The python version's
    pickles are read by a restricted unpickler that only rebuilds numpy arrays.
``imagenet(data_dir, train_dir="train", test_dir="val")``
    An image folder; returns an :class:`ImageFolder` (file lists, not arrays). Layout::

        <data_dir>/train/<class>/*.JPEG
        <data_dir>/val/<class>/*.JPEG

    Class ``i`` is the ``i``-th class folder name in sorted order. Decode with
    :func:`image_batches` (process pool, Pillow, random-resized-crop + flip for training, resize
    256 + centre crop 224 for evaluation, ImageNet mean/std). A damaged image is skipped with a
    warning naming it and counted; more than :func:`corrupt_limit` (``max(10, 0.1 %)`` of the
    images) stops the run with :class:`CorruptImagesError`.

All in-memory loaders return a frozen :class:`Dataset` ``(x_train, y_train, x_test, y_test,
num_classes, name)`` whose arrays are read-only views (the cached ones are shared).

Batching is a pure function of a ``jax.random`` key and the epoch index (:func:`epoch_batches`,
:func:`batches`, :func:`epoch_permutation` for in-``jit`` use), so a run resumed at epoch ``e``,
step ``s`` sees the same batches. :func:`random_crop_flip` is the CIFAR augmentation (4-pixel
padding, random crop, horizontal flip), a jittable function of ``(x, key)``.

Nothing here reads configs or touches the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nmelab.data.batching import (
    AugmentFn,
    batches,
    epoch_batches,
    epoch_keys,
    epoch_permutation,
    eval_batches,
    num_batches,
    random_crop_flip,
)
from nmelab.data.cifar10 import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    NumpyOnlyUnpickler,
    RefusedPickleError,
    cifar10,
    load_restricted_pickle,
    normalize_cifar10,
)
from nmelab.data.dataset import Dataset, key_words
from nmelab.data.digits import digits
from nmelab.data.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptImageError,
    CorruptImagesError,
    CorruptImageWarning,
    ImageFolder,
    corrupt_limit,
    decode_image,
    image_batches,
    imagenet,
    normalize_imagenet,
)
from nmelab.data.mnist1d import mnist1d
from nmelab.data.synthetic import synthetic

_LOADERS: dict[str, Callable[..., Any]] = {
    "digits": digits,
    "mnist1d": mnist1d,
    "synthetic": synthetic,
    "cifar10": cifar10,
    "imagenet": imagenet,
}

NAMES: tuple[str, ...] = tuple(_LOADERS)
"""Every name :func:`get` accepts."""


def names() -> tuple[str, ...]:
    """Return the registered dataset names."""
    return NAMES


def get(name: str, **kwargs: Any) -> Dataset | ImageFolder:
    """Load the dataset ``name`` with the loader's keyword arguments.

    Raises:
      ValueError: unknown ``name`` (the message lists the choices).
    """
    if not isinstance(name, str) or name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choices: {', '.join(NAMES)}")
    return _LOADERS[name](**kwargs)


__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NAMES",
    "AugmentFn",
    "CorruptImageError",
    "CorruptImageWarning",
    "CorruptImagesError",
    "Dataset",
    "ImageFolder",
    "NumpyOnlyUnpickler",
    "RefusedPickleError",
    "batches",
    "cifar10",
    "corrupt_limit",
    "decode_image",
    "digits",
    "epoch_batches",
    "epoch_keys",
    "epoch_permutation",
    "eval_batches",
    "get",
    "image_batches",
    "imagenet",
    "key_words",
    "load_restricted_pickle",
    "mnist1d",
    "names",
    "normalize_cifar10",
    "normalize_imagenet",
    "num_batches",
    "random_crop_flip",
    "synthetic",
]
