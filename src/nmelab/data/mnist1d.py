"""MNIST-1D (Greydanus, 2020), generated locally: never downloaded, never written to disk."""

from __future__ import annotations

import functools
import random

import numpy as np

from nmelab import validation
from nmelab.data.dataset import Dataset

__all__ = ["mnist1d"]


@functools.lru_cache(maxsize=8)
def mnist1d(num_train: int = 4000, num_test: int = 1000, seed: int = 42) -> Dataset:
    """Generate MNIST-1D with ``mnist1d.data.make_dataset`` (about 1 s for 5000 examples).

    The trap: ``mnist1d.get_dataset`` first tries a download with no timeout and pickles to the
    working directory. This calls the generator directly, which does no I/O. The generator seeds
    numpy's and Python's global RNGs; their states are restored afterwards.

    ``num_train + num_test`` examples (rounded up to a multiple of 10, one tenth per class) are
    generated in one run and standardised together, as the package does; the first ``num_train``
    are the training set. The defaults reproduce the package's regenerated dataset (4000/1000,
    seed 42). Changing ``num_test`` changes the generated training examples too.

    Returns:
      A :class:`Dataset` with float32 inputs ``(N, 40)`` and int32 labels, 10 classes.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    validation.check_count(num_train, "num_train")
    validation.check_count(num_test, "num_test")
    args = get_dataset_args()
    args.num_samples = -(-(num_train + num_test) // 10) * 10
    args.train_split = 1.0
    args.seed = seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.asarray(data["x"], dtype=np.float32)
    y = np.asarray(data["y"], dtype=np.int32)
    train, test = slice(0, num_train), slice(num_train, num_train + num_test)
    return Dataset(x[train], y[train], x[test], y[test], 10, "mnist1d")
