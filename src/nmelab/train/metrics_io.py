"""Atomic JSON files and append-only JSON-lines logs for a run's workdir.

Every whole-file write goes to a temporary file in the same folder and is moved into place with
``os.replace``: a reader (or a run killed mid-write) sees the old file or the new one, never half
of one. JSON-lines logs are appended a record at a time and, on resume, cut back to the records of
steps the checkpoint covers (:func:`truncate_jsonl`), so a killed and resumed run logs every step
exactly once.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _is_main_process() -> bool:
    """Process 0 of a multi-host run (or the only process) writes the logs; the others skip."""
    import jax

    return jax.process_index() == 0


def to_jsonable(value: Any) -> Any:
    """Convert numpy/jax scalars and arrays to plain Python; NaN and inf become ``None``."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "__array__") and not isinstance(value, str | bytes):
        array = np.asarray(value)
        return to_jsonable(array.tolist()) if array.ndim else to_jsonable(array.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically (tmp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(value), indent=2, sort_keys=False) + "\n"
    _write_atomic(path, text)


def _write_atomic(path: Path, text: str) -> None:
    if not _is_main_process():  # nmelab.parallel (issue 8): one writer in multi-host runs
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    with open(path) as handle:
        return json.load(handle)


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one record as a line to a JSON-lines file (flushed before returning)."""
    line = json.dumps(to_jsonable(record)) + "\n"
    if not _is_main_process():  # nmelab.parallel (issue 8): one writer in multi-host runs
        return
    with open(path, "a") as handle:
        handle.write(line)
        handle.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read every complete record of a JSON-lines file (a torn last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_jsonl(path: str | Path, max_step: int) -> None:
    """Keep the records with ``step <= max_step`` that are not ``"final"`` (atomic rewrite).

    Records marked ``"final": true`` are written after the last checkpoint, so a resumed run
    writes them again. A missing file is created empty.
    """
    path = Path(path)
    kept: Iterable[dict[str, Any]] = [
        r for r in read_jsonl(path) if r.get("step", 0) <= max_step and not r.get("final")
    ]
    _write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
