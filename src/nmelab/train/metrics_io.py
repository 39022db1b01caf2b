"""Append-only JSON-lines logs of a run's workdir (``metrics.jsonl``, ``curvature.jsonl``).

Records are appended a line at a time and, on resume, cut back to the records of the steps the
checkpoint covers (:func:`truncate_jsonl`), so a killed and resumed run logs every step exactly
once. Whole files go through :mod:`nmelab._io` (atomic, strict JSON: NaN and inf as ``null``).
The trainer alone decides who writes: in a multi-host run only process 0 calls these functions.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nmelab._io import to_jsonable, write_text_atomic

__all__ = ["append_jsonl", "read_jsonl", "truncate_jsonl"]


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one record as a line of strict JSON (flushed before returning)."""
    line = json.dumps(to_jsonable(record), allow_nan=False) + "\n"
    with open(path, "a") as handle:
        handle.write(line)
        handle.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file; a line that is not a JSON object is dropped with a warning.

    A torn last line (a run killed mid-write) is such a line; the warning names the file and the
    line number. A missing file has no records.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            record = err
        if isinstance(record, dict):
            records.append(record)
        else:
            warnings.warn(
                f"{path}:{number}: dropped a line that is not a JSON record", stacklevel=2
            )
    return records


def truncate_jsonl(path: str | Path, max_step: int) -> None:
    """Keep the records with ``step <= max_step`` that are not ``"final"`` (atomic rewrite).

    Records marked ``"final": true`` are written after the last checkpoint, so a resumed run
    writes them again. A missing file is created empty.
    """
    kept = [
        r
        for r in read_jsonl(path)
        if isinstance(r.get("step"), int) and r["step"] <= max_step and not r.get("final")
    ]
    write_text_atomic(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))
