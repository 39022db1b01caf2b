"""A run's workdir: its files (only process 0 writes), clocks, log records and summary.

Used by :func:`nmelab.train.train_and_evaluate`; see :mod:`nmelab.train.train` for the layout.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nmelab._io import write_json_atomic
from nmelab.train import metrics_io
from nmelab.train.run import Run
from nmelab.train.state import TrainState

__all__ = ["Workdir", "classify", "run_summary", "train_record"]


class Workdir:
    """The run's files and clocks; in a multi-host run only process 0 writes."""

    LOGS = ("metrics.jsonl", "curvature.jsonl")

    def __init__(self, path: Path):
        self.path = path
        self.writer = jax.process_index() == 0
        self.timing = dict.fromkeys(("train_s", "compile_s", "eval_s", "checkpoint_s", "tracking_s"), 0.0)  # fmt: skip
        self.elapsed_before = 0.0
        self.start = self.mark = time.perf_counter()

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Append ``record`` to the JSON-lines log ``name``."""
        if self.writer:
            metrics_io.append_jsonl(self.path / name, record)

    def write_json(self, name: str, value: Any) -> None:
        """Write ``name`` atomically as strict JSON."""
        if self.writer:
            write_json_atomic(self.path / name, value)

    def cut_logs(self, step: int) -> None:
        """Drop the records after ``step`` (all of them for ``-1``): they will be redone."""
        if self.writer:
            for name in self.LOGS:
                metrics_io.truncate_jsonl(self.path / name, step)

    def elapsed(self) -> float:
        """Seconds since the run first started, summed over resumes."""
        return self.elapsed_before + time.perf_counter() - self.start

    def steady(self) -> float:
        """Training time without the first call's tracing and compilation."""
        return self.timing["train_s"] - self.timing["compile_s"]

    def lap(self, name: str | None) -> None:
        """Book the time since the last lap to ``timing[name]`` (``None``: to nothing)."""
        now = time.perf_counter()
        if name is not None:
            self.timing[name] += now - self.mark
        self.mark = now

    def meta(self, step: int) -> dict[str, Any]:
        """The host bookkeeping saved with the checkpoint of ``step``."""
        return {"step": step, "elapsed_s": self.elapsed(), "timing": dict(self.timing)}


def train_record(run: Run, step: int, sums: Any, examples: int, seconds: float) -> dict[str, Any]:
    """The training record of the log interval ending at ``step``: per-seed means of ``sums``."""
    values = {k: np.asarray(v, dtype=np.float64) for k, v in sums.items()}
    count, lr = values.pop("count"), float(values.pop("lr")[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = {k: v / count for k, v in values.items()}
    rate = examples / seconds if seconds > 0 else None
    return {"step": step, "epoch": step / run.steps_per_epoch, "split": "train", **means, "lr": lr,
            "examples_per_sec": rate}  # fmt: skip


def run_summary(
    run: Run, files: Workdir, state: TrainState, step: int, evaluations: dict[str, Any]
) -> dict[str, Any]:
    """The summary of a finished run (see :func:`nmelab.train.train_and_evaluate`)."""
    config, num_classes = run.config, run.source.num_classes
    diverged_at = np.asarray(state.diverged_at)
    rows: dict[str, list[Any]] = {}
    for split in ("test", "train"):
        for metric in ("loss", "accuracy"):
            values = evaluations.get(split, {}).get(metric)
            rows[f"{split}_{metric}"] = [
                None if values is None or d >= 0 else float(values[i])
                for i, d in enumerate(diverged_at)
            ]
    statuses = [
        classify(rows["test_loss"][i], rows["test_accuracy"][i], num_classes, int(d))
        for i, d in enumerate(diverged_at)
    ]
    train_examples = step * config.batch_size * config.num_seeds
    return {
        "status": statuses,
        "diverged_step": [int(d) if d >= 0 else None for d in diverged_at],
        "seeds": [config.seed + i for i in range(config.num_seeds)],
        **rows,
        "steps": step,
        "total_steps": run.total_steps,
        "epochs": step / run.steps_per_epoch,
        "num_params": run.num_params,
        "num_classes": num_classes,
        "wall_time_s": files.elapsed(),
        "examples_per_sec": train_examples / max(files.steady(), 1e-9),
        "timing": dict(files.timing),
        "dataset": config.dataset,
        "model": config.model,
        "activation": config.activation,
        "regularizer": config.regularizer,
        "regularizer_params": config.regularizer_params.to_dict(),
        "regularizer_record": run.regularizer_record,
    }


def classify(
    test_loss: float | None, test_accuracy: float | None, num_classes: int, diverged_step: int
) -> str:
    """Outcome of one seed: ``"diverged"``, ``"collapsed"`` (a constant predictor) or ``"ok"``.

    Collapsed means test accuracy ``<= 1/K + 0.02`` *and* test loss ``>= 0.95 ln K``: the loss of
    the uniform prediction is ``ln K``, and a model that learned anything beats both bounds.
    """
    if diverged_step >= 0 or test_loss is None or test_accuracy is None:
        return "diverged"
    if not np.isfinite(test_loss):
        return "diverged"
    chance = 1.0 / num_classes
    if test_accuracy <= chance + 0.02 and test_loss >= 0.95 * math.log(num_classes):
        return "collapsed"
    return "ok"
