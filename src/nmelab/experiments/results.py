"""Load every finished run under a sweep root into one pandas DataFrame (one row per seed).

Only complete, valid ``result.json`` files are read (:func:`nmelab.experiments.sweep.load_record`),
so a killed sweep never shows half a run; a damaged record is skipped with a warning naming it
(the next ``nmelab reproduce`` sets it aside and recomputes it). A training run packs several seeds (the trainer's ``num_seeds``, vmapped);
its summary holds per-seed lists, which become one row each.

Columns:

* ``run_id``, ``runner``, ``name``, ``elapsed_s`` (wall), ``cpu_s``, ``finished_at``;
* ``seed``, ``status`` (``"ok" | "diverged" | "collapsed"``), ``diverged_step``,
  ``test_accuracy``, ``test_loss``, ``train_accuracy``, ``train_loss`` (fractions, as the trainer
  reports them; ``NaN`` for a diverged seed), ``num_classes``;
* ``accuracy``: test accuracy in percent (``NaN`` for a diverged seed), and ``score``: the same,
  but a diverged seed scores chance, ``100/K`` - its predictions are meaningless, and the
  effects of the report are computed on ``score`` so that a diverged seed counts as the failure it
  is instead of silently dropping out (the trap: dropping it would make a method that diverges in
  2 of 3 seeds look as good as its one survivor). The report shows, per claim, how many seeds
  diverged or collapsed and the verdict without them (:mod:`nmelab.experiments.claims`);
* the derived grid coordinates ``method`` (the regularizer, ``"sgd"`` for none), ``activation``,
  ``beta``, ``rho``, ``sigma2``, ``model``, ``dataset``, ``learning_rate``, ``num_epochs``;
* ``config.<key>``: every config entry, nested keys dotted.

Computation tasks (Fig. 1, B.4) have no per-seed lists; they appear as one row with
``status = "ok"`` and NaN accuracies.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from nmelab._io import write_text_atomic
from nmelab.experiments.recipes import TRAIN_RUNNER
from nmelab.experiments.sweep import RESULT_FILE, RUNS_DIR, DamagedRecord, load_record

__all__ = ["describe", "load_results", "seed_rows", "write_results_csv"]


_PER_SEED = (
    "status",
    "diverged_step",
    "test_accuracy",
    "test_loss",
    "train_accuracy",
    "train_loss",
)


_DESCRIBED = ("method", "activation", "beta", "rho", "sigma2", "model", "dataset", "learning_rate",
              "num_epochs")  # fmt: skip


def _flatten(config: Mapping[str, Any], prefix: str = "config.") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, list | tuple):
            flat[f"{prefix}{key}"] = json.dumps(value)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def describe(config: Mapping[str, Any]) -> dict[str, Any]:
    """The grid coordinates of a training config.

    Returns:
      ``method`` (``"sgd"`` for ``regularizer = "none"``), ``activation``, ``beta`` (NaN if the
      activation has none), ``rho``, ``sigma2`` (``σ²`` from ``sigma``) - 0 when the method has no
      such parameter - ``model``, ``dataset``, ``learning_rate``, ``num_epochs``.
    """
    reg = config.get("regularizer", "none") or "none"
    reg_params = config.get("regularizer_params") or {}
    act_params = config.get("activation_params") or {}
    sigma = reg_params.get("sigma")
    return {
        "method": "sgd" if reg == "none" else reg,
        "activation": config.get("activation"),
        "beta": float(act_params["beta"]) if "beta" in act_params else math.nan,
        "rho": float(reg_params.get("rho", 0.0)),
        "sigma2": float(sigma) ** 2 if sigma is not None else 0.0,
        "model": config.get("model"),
        "dataset": config.get("dataset"),
        "learning_rate": config.get("learning_rate"),
        "num_epochs": config.get("num_epochs"),
    }


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def seed_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per seed from a trainer summary (per-seed lists), or one row for a computation."""
    seeds = summary.get("seeds")
    if not isinstance(seeds, list) or not isinstance(summary.get("status"), list):
        return [{"seed": math.nan, "status": "ok"}]
    num_classes = summary.get("num_classes")
    rows = []
    for i, seed in enumerate(seeds):
        row: dict[str, Any] = {"seed": int(seed), "num_classes": num_classes}
        for key in _PER_SEED:
            values = summary.get(key)
            value = values[i] if isinstance(values, list) and i < len(values) else None
            row[key] = value if key == "status" else _num(value)
        accuracy = 100.0 * row["test_accuracy"]
        row["accuracy"] = accuracy
        chance = 100.0 / num_classes if num_classes else math.nan
        row["score"] = chance if row["status"] == "diverged" or math.isnan(accuracy) else accuracy
        rows.append(row)
    return rows


def _read_csv(path: Path) -> pd.DataFrame:
    """A frame written by ``load_results(...).to_csv(path, index=False)``, read back."""
    try:
        frame = pd.read_csv(path, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"root: {str(path)!r} is not a results CSV ({err})") from None
    needed = ["run_id", "runner", "seed", *_PER_SEED, "accuracy", "score"]
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise ValueError(
            f"root: {str(path)!r} is not a results CSV: columns {', '.join(absent)} are missing"
        )
    return frame


def load_results(root: str | Path) -> pd.DataFrame:
    """Every finished run under ``root`` (a ``nmelab reproduce --out`` folder), one row per seed.

    Args:
      root: the sweep root, whose ``root/runs/*/result.json`` are read; or a CSV file written
        from this frame (``nmelab reproduce --export-csv``, the published
        ``docs/results/<scale>/results.csv``), read back as the same frame: numbers as floats,
        text as strings, config entries that were lists as their text.

    Returns:
      A DataFrame with the columns of the module docstring, sorted by ``run_id`` and ``seed``;
      empty (with those columns) when nothing has finished.

    Raises:
      FileNotFoundError: ``root`` does not exist.
      ValueError: ``root`` is a file that is not a CSV with the columns of this frame.
    """
    root = Path(root)
    if root.is_file():
        return _read_csv(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root: no such directory {str(root)!r}")
    records = []
    for result_file in sorted((root / RUNS_DIR).glob(f"*/{RESULT_FILE}")):
        try:
            result = load_record(result_file.parent)
        except DamagedRecord as err:
            warnings.warn(f"damaged run record skipped: {err}", stacklevel=2)
            continue
        if result is None:  # removed since the folder was listed
            continue
        config = result.get("config", {})
        base = {
            "run_id": result.get("run_id", result_file.parent.name),
            "runner": result.get("runner"),
            "name": result.get("name"),
            "elapsed_s": result.get("elapsed_s"),
            "cpu_s": result.get("cpu_s"),
            "finished_at": result.get("finished_at"),
        }
        if result.get("runner") == TRAIN_RUNNER:
            base.update(describe(config))
        flat = _flatten(config)
        for row in seed_rows(result["summary"]):
            records.append({**base, **row, **flat})
    columns = ["run_id", "runner", "name", "seed", *_PER_SEED, "num_classes", "accuracy", "score",
               *_DESCRIBED, "elapsed_s", "cpu_s", "finished_at"]  # fmt: skip
    frame = pd.DataFrame.from_records(records)
    for column in columns:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    ordered = columns + sorted(c for c in frame.columns if c not in columns)
    frame = frame[ordered]
    if len(frame):
        frame = frame.sort_values(["run_id", "seed"], kind="stable").reset_index(drop=True)
    return frame


def write_results_csv(root: str | Path, path: str | Path) -> int:
    """Write :func:`load_results` of ``root`` to ``path`` as CSV (atomically); return its rows.

    ``load_results(path)`` reads the file back as the same frame.
    """
    frame = load_results(root)
    write_text_atomic(path, frame.to_csv(index=False))
    return len(frame)
