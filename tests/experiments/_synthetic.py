"""Synthetic sweep results with known answers: write result.json files for an experiment's points."""

import numpy as np

from nmelab._io import write_json_atomic
from nmelab.experiments import base
from nmelab.experiments.sweep import RESULT_FILE, run_dir

QUICK = base.get_scale("quick")


def fill(root, names, accuracy_fn, *, scale=QUICK, status_fn=None, sd=0.2, seed=0, keep=None):
    """Write a result for every training task of ``names``.

    Args:
      accuracy_fn: ``(line, x, panel) -> mean test accuracy in percent``.
      status_fn: ``(line, x, panel, seed) -> "ok" | "diverged" | "collapsed"``.
      sd: per-seed noise (percent).
      keep: ``spec -> bool``; tasks it rejects get no result (missing runs).
    """
    rng = np.random.default_rng(seed)
    for name in names:
        for point in base.get(name).points(scale):
            for spec in point.specs:
                path = run_dir(root, spec) / RESULT_FILE
                if path.exists() or (keep is not None and not keep(spec)):
                    continue
                n = spec.config["num_seeds"]
                mean = accuracy_fn(point.line, point.x, point.panel)
                acc = [float(np.clip(mean + rng.normal(0, sd), 0, 100)) / 100 for _ in range(n)]
                status = [
                    status_fn(point.line, point.x, point.panel, spec.config["seed"] + i)
                    if status_fn
                    else "ok"
                    for i in range(n)
                ]
                acc = [None if s == "diverged" else a for s, a in zip(status, acc, strict=True)]
                acc = [0.1 if s == "collapsed" else a for s, a in zip(status, acc, strict=True)]
                summary = {
                    "seeds": [spec.config["seed"] + i for i in range(n)],
                    "status": status,
                    "diverged_step": [None] * n,
                    "test_accuracy": acc,
                    "test_loss": [0.1] * n,
                    "train_accuracy": [1.0] * n,
                    "train_loss": [0.0] * n,
                    "num_classes": 10,
                }
                write_json_atomic(path, {**spec.to_json(), "summary": summary, "elapsed_s": 1.0})
