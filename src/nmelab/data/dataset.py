"""The in-memory dataset container and the key-to-seed bridge shared by the loaders."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Dataset", "key_words", "readonly"]


def readonly(array: Any) -> np.ndarray:
    """Return a read-only view of ``array`` (cached datasets must not be mutated by callers)."""
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test arrays held in memory (numpy, read-only views).

    Attributes:
      x_train: ``(N_train, ...)`` inputs.
      y_train: ``(N_train,)`` integer labels in ``[0, num_classes)``.
      x_test: ``(N_test, ...)`` inputs, same trailing shape as ``x_train``.
      y_test: ``(N_test,)`` integer labels.
      num_classes: number of classes.
      name: short name, e.g. ``"mnist1d"``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x = np.asarray(getattr(self, f"x_{split}"))
            y = np.asarray(getattr(self, f"y_{split}"))
            if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(
                    f"x_{split}, y_{split}: expected (N, ...) inputs and (N,) labels, "
                    f"got shapes {x.shape} and {y.shape}"
                )
            if not np.issubdtype(y.dtype, np.integer):
                raise TypeError(f"y_{split}: expected integer labels, got dtype {y.dtype}")
            object.__setattr__(self, f"x_{split}", readonly(x))
            object.__setattr__(self, f"y_{split}", readonly(y))
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                "x_train, x_test: expected the same per-example shape, got "
                f"{self.x_train.shape[1:]} and {self.x_test.shape[1:]}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(40,)`` or ``(32, 32, 3)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return len(self.y_test)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.x_train.shape} {self.x_train.dtype}, "
            f"test={self.x_test.shape}, num_classes={self.num_classes})"
        )


def key_words(key: jax.Array) -> tuple[int, ...]:
    """The raw ``uint32`` words of a ``jax.random`` key, to seed numpy generators from it.

    Accepts typed keys (``jax.random.key``) and raw ``uint32`` keys (``jax.random.PRNGKey``).
    """
    if not isinstance(key, jax.Array | np.ndarray):
        raise TypeError(f"key: expected a jax.random key, got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = np.asarray(key)
    if words.dtype != np.uint32 or words.ndim != 1:
        raise TypeError(
            f"key: expected a single jax.random key, got dtype {words.dtype} shape {words.shape}"
        )
    return tuple(int(w) for w in words)
