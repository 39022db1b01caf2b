"""CIFAR-10 from a local folder, binary or python version (pickles via a restricted loader)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from nmelab.data.dataset import Dataset

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "LAYOUT",
    "NumpyOnlyUnpickler",
    "RefusedPickleError",
    "cifar10",
    "load_restricted_pickle",
    "normalize_cifar10",
]

CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
"""Per-channel mean of the CIFAR-10 training images on the [0, 1] scale."""

CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)
"""Per-channel standard deviation of the CIFAR-10 training images on the [0, 1] scale."""

_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = "test_batch"
_RECORD = 1 + 3 * 32 * 32

LAYOUT = """expected one of these layouts (data_dir may also be the cifar-10-batches-* folder):
  <data_dir>/cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin, test_batch.bin
      (binary version: records of 1 label byte + 3072 pixel bytes, channel-major 3x32x32)
  <data_dir>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch
      (python version: pickled dicts with 'data' (N, 3072) uint8 and 'labels')"""


class RefusedPickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the numpy-array allow-list."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # How Python 3 writes bytes at pickle protocol 2: _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric

    return {
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,
        ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays, dicts, lists, strings and numbers, nothing else.

    ``find_class`` (the only way a pickle reaches a callable) answers from an allow-list of numpy
    array reconstruction helpers (``_reconstruct``, ``_frombuffer``, ``ndarray``, ``dtype``) and a
    latin-1-only ``_codecs.encode``; every other global raises :class:`RefusedPickleError`.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Return an allow-listed global or refuse."""
        allowed = _allowed_globals()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise RefusedPickleError(
            f"refusing to load global {module}.{name}: only numpy array reconstruction is allowed "
            "in a CIFAR-10 batch"
        )


def load_restricted_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`NumpyOnlyUnpickler` (``encoding='bytes'``, for Python 2)."""
    with open(path, "rb") as f:
        return NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()


def _find_root(data_dir: Path) -> tuple[Path, str]:
    candidates = [
        (data_dir / "cifar-10-batches-bin", "bin"),
        (data_dir / "cifar-10-batches-py", "py"),
        (data_dir, "bin"),
        (data_dir, "py"),
    ]
    for root, kind in candidates:
        suffix = ".bin" if kind == "bin" else ""
        if (root / f"{_TEST}{suffix}").is_file():
            return root, kind
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"cifar10: data_dir {str(data_dir)!r} "
            + ("is a file, not a folder" if data_dir.exists() else "does not exist")
            + f"; {LAYOUT}"
        )
    raise FileNotFoundError(f"cifar10: no CIFAR-10 batches found in {str(data_dir)!r}; {LAYOUT}")


def _read_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise ValueError(
            f"cifar10: {str(path)!r} has {raw.size} bytes, not a positive multiple of the "
            f"{_RECORD}-byte record; {LAYOUT}"
        )
    records = raw.reshape(-1, _RECORD)
    return records[:, 1:], records[:, 0].astype(np.int32)


def _read_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = load_restricted_pickle(path)
    except RefusedPickleError as err:
        raise ValueError(f"cifar10: {str(path)!r} refused: {err}") from err
    except Exception as err:  # truncated or not a pickle at all
        raise ValueError(
            f"cifar10: {str(path)!r} is not a readable pickle ({err}); {LAYOUT}"
        ) from err
    if not isinstance(batch, dict):
        raise ValueError(
            f"cifar10: {str(path)!r} holds {type(batch).__name__}, not a dict; {LAYOUT}"
        )
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(
            f"cifar10: {str(path)!r} lacks 'data' or 'labels' (keys: {sorted(batch)}); {LAYOUT}"
        )
    data = batch["data"]
    labels = np.asarray(batch["labels"])
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _RECORD - 1
        or labels.shape != (len(data),)
    ):
        raise ValueError(
            f"cifar10: {str(path)!r}: expected 'data' uint8 (N, 3072) and N 'labels', got "
            f"{getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')} and {labels.shape}"
        )
    return data, labels.astype(np.int32)


def _read_split(root: Path, kind: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    reader = _read_bin if kind == "bin" else _read_py
    suffix = ".bin" if kind == "bin" else ""
    xs, ys = [], []
    for name in names:
        path = root / f"{name}{suffix}"
        if not path.is_file():
            raise FileNotFoundError(f"cifar10: missing {str(path)!r}; {LAYOUT}")
        x, y = reader(path)
        if y.size and (y.min() < 0 or y.max() > 9):
            raise ValueError(f"cifar10: {str(path)!r} has labels outside 0..9")
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), np.concatenate(ys)


def cifar10(data_dir: str | Path, normalize: bool = True) -> Dataset:
    """Load CIFAR-10 (50,000 train / 10,000 test 32x32x3 images) from ``data_dir``.

    Both official versions are read: binary (``cifar-10-batches-bin``) and python
    (``cifar-10-batches-py``, pickles read by :class:`NumpyOnlyUnpickler`, never plain
    ``pickle.load``: a pickle can run arbitrary code).

    Args:
      data_dir: folder holding ``cifar-10-batches-bin`` or ``cifar-10-batches-py`` (or either
        folder itself).
      normalize: float32 inputs scaled to [0, 1] and standardised per channel with
        :data:`CIFAR10_MEAN` / :data:`CIFAR10_STD`; ``False`` keeps the uint8 pixels.

    Returns:
      A :class:`Dataset` with inputs ``(N, 32, 32, 3)`` (HWC) and int32 labels, 10 classes.

    Raises:
      FileNotFoundError: missing folder or batch file (the message shows the expected layout).
      ValueError: a malformed batch, or a pickle that asks for anything but numpy arrays.
    """
    root, kind = _find_root(Path(data_dir))
    x_train, y_train = _read_split(root, kind, _TRAIN)
    x_test, y_test = _read_split(root, kind, (_TEST,))
    if normalize:
        x_train, x_test = normalize_cifar10(x_train), normalize_cifar10(x_test)
    return Dataset(x_train, y_train, x_test, y_test, 10, "cifar10")


def normalize_cifar10(x: np.ndarray) -> np.ndarray:
    """Map uint8 ``(..., 3)`` pixels to float32 ``(x / 255 - mean) / std`` per channel."""
    return ((x.astype(np.float32) / 255.0 - CIFAR10_MEAN) / CIFAR10_STD).astype(np.float32)
