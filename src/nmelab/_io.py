"""Atomic files and strict JSON: the one place nmelab writes and reads its small records.

One policy everywhere: NaN and ±inf are written as JSON ``null`` (strict JSON that every reader
accepts; the record's own status field, e.g. ``"diverged"``, says why a number is missing).
Whole files are written to a hidden temporary file in the same folder, flushed, fsynced and
moved into place with ``os.replace``, so a reader (or a run killed mid-write) sees the old file
or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "to_jsonable",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "read_json",
]


def to_jsonable(value: Any) -> Any:
    """Plain Python for numpy/jax scalars and arrays, paths and tuples; non-finite floats → None."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__array__") and not isinstance(value, str | bytes):
        array = np.asarray(value)
        return to_jsonable(array.tolist()) if array.ndim else to_jsonable(array.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8), creating parent folders."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (complete file or none), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_json_atomic(path: str | Path, value: Any, *, indent: int | None = 1) -> None:
    """Write ``value`` as strict JSON (non-finite floats as ``null``) to ``path`` atomically."""
    text = json.dumps(to_jsonable(value), indent=indent, allow_nan=False) + "\n"
    write_text_atomic(path, text)


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing, unreadable or malformed file raises ``ValueError`` naming it.

    Raises:
      ValueError: ``"<path>: <reason>"`` for a file that is missing, not UTF-8 or not JSON.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ValueError(f"{path}: file not found") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON file ({err})") from err
