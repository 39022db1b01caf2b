"""Random data of any shape, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nmelab.data.dataset import Dataset


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
    shape = tuple(int(s) for s in shape)
    if num_classes < 2 or num_train < 1 or num_test < 1 or any(s < 1 for s in shape):
        raise ValueError(
            "synthetic: expected num_classes >= 2, num_train, num_test >= 1 and positive shape; "
            f"got num_classes={num_classes}, num_train={num_train}, num_test={num_test}, "
            f"shape={shape}"
        )
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_train + num_test, *shape), dtype=np.float32)
    teacher = rng.standard_normal((int(np.prod(shape)), num_classes))
    y = np.argmax(x.reshape(len(x), -1) @ teacher, axis=1).astype(np.int32)
    return Dataset(
        x[:num_train], y[:num_train], x[num_train:], y[num_train:], num_classes, "synthetic"
    )
