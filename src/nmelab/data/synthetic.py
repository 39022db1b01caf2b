"""Random data of any shape, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nmelab import validation
from nmelab.data.dataset import Dataset

__all__ = ["synthetic"]


def synthetic(
    shape: Sequence[int] = (8,),
    num_classes: int = 10,
    num_train: int = 256,
    num_test: int = 64,
    seed: int = 0,
) -> Dataset:
    """Standard-normal float32 inputs of per-example ``shape`` with learnable labels.

    Labels are ``argmax(W vec(x))`` for a random Gaussian teacher ``W`` (drawn from the same
    ``numpy.random.default_rng(seed)``), so a model can fit them and they generalise.
    """
    validation.check_count(num_classes, "num_classes", 2)
    validation.check_count(num_train, "num_train")
    validation.check_count(num_test, "num_test")
    shape = tuple(validation.check_count(s, f"shape[{i}]") for i, s in enumerate(shape))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train + num_test, *shape), dtype=np.float32)
    teacher = rng.standard_normal((int(np.prod(shape)), num_classes))
    y = np.argmax(x.reshape(len(x), -1) @ teacher, axis=1).astype(np.int32)
    return Dataset(
        x[:num_train], y[:num_train], x[num_train:], y[num_train:], num_classes, "synthetic"
    )
