"""scikit-learn's 8x8 handwritten digits (1797 examples, shipped with scikit-learn)."""

from __future__ import annotations

import functools

import numpy as np

from nmelab.data.dataset import Dataset

__all__ = ["digits"]


@functools.lru_cache(maxsize=4)
def digits(num_test: int = 360, seed: int = 0) -> Dataset:
    """Load ``sklearn.datasets.load_digits`` with a fixed train/test split.

    The 1797 examples are split by a permutation from ``numpy.random.default_rng(seed)``: the first
    ``num_test`` go to the test set (default 1437 train / 360 test). Each of the 64 pixels is
    standardised with the *training* mean and standard deviation (constant pixels keep scale 1).

    Returns:
      A :class:`Dataset` with float32 inputs ``(N, 64)`` and int32 labels, 10 classes.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target, dtype=np.int32)
    if not 0 < num_test < len(y):
        raise ValueError(f"num_test: expected 0 < num_test < {len(y)}, got {num_test}")
    perm = np.random.default_rng(seed).permutation(len(y))
    test_idx, train_idx = perm[:num_test], perm[num_test:]
    mean = x[train_idx].mean(axis=0)
    std = x[train_idx].std(axis=0)
    std[std == 0] = 1.0
    x = ((x - mean) / std).astype(np.float32)
    return Dataset(x[train_idx], y[train_idx], x[test_idx], y[test_idx], 10, "digits")
