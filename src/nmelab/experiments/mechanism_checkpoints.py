"""The mechanism at ``paper`` scale: second-order fidelity measured on the Fig. 2 runs' checkpoints.

At ``paper`` scale the mechanism (:mod:`nmelab.experiments.mechanism`) trains nothing: the paper's
own trained models are the SGD runs (ρ = 0) of Fig. 2, CIFAR-10 WRN-28-10 and ImageNet ResNet-50,
ReLU and GELU, one task per seed. One measurement task per such run restores its final weights
(:func:`nmelab.train.load_trained`), measures the cosine between ``ρHu`` and
``Δg = g(θ + ρu) − g(θ)`` (:func:`nmelab.estimators.fidelity.second_order_fidelity`, ``u = g/‖g‖``)
on the run's fixed probe batch (its first training examples, eval mode), and writes one record of
the trainer's curvature schema (:func:`nmelab.train.tracking.check_fidelity_record`) at the
checkpoint's step, so the mechanism's claims read it like a tracked run's last record ("late").

The trap: the measurement needs the training run's result. The sweep has no dependencies between
tasks; it starts the longest first, so in one process the Fig. 2 run is done before; a measurement
that finds no result (another worker or shard still training it) fails with a message saying so,
and the next invocation of the same command runs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nmelab._io import to_jsonable, write_text_atomic
from nmelab.experiments import recipes
from nmelab.experiments.sweep import RunSpec, load_record, run_dir

__all__ = ["MEASURE_COST_S", "measurement_spec", "run", "validate"]

MEASURE_COST_S = 600.0
"""Rough cost of one measurement (restore, one probe batch, a few gradients), for the plan."""

_RUNNER = "nmelab.experiments.mechanism_checkpoints:run"
_VALIDATOR = "nmelab.experiments.mechanism_checkpoints:validate"


def measurement_spec(training: RunSpec, rhos: Sequence[float], probe_batch_size: int) -> RunSpec:
    """The measurement task of the trained run ``training`` (one seed)."""
    if training.config["num_seeds"] != 1:
        raise ValueError(
            f"training: expected a one-seed task, got num_seeds={training.config['num_seeds']}"
        )
    return RunSpec(
        _RUNNER,
        {
            "checkpoint_run_id": training.run_id,
            "training": dict(training.config),
            "fidelity_rhos": [float(r) for r in rhos],
            "probe_batch_size": int(probe_batch_size),
        },
        f"fidelity-{training.name}",
        cost=MEASURE_COST_S,
        validator=_VALIDATOR,
        recipe=training.recipe,
    )


def run(config: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Sweep runner: measure the fidelity of the trained run named in ``config``.

    Returns:
      The training run's summary (its per-seed lists: the seed's status and accuracy).

    Raises:
      RuntimeError: the training run has no result yet (rerun the command when it has).
    """
    import jax
    import jax.numpy as jnp

    from nmelab import train
    from nmelab.estimators.fidelity import second_order_fidelity
    from nmelab.train import tracking

    root = Path(workdir).parents[1]
    train_dir = run_dir(root, config["checkpoint_run_id"])
    record = load_record(train_dir)
    if record is None:
        raise RuntimeError(
            f"the trained run {train_dir} has no result yet (it is a Fig. 2 run: it is trained "
            "by this sweep, in another worker or shard); rerun the same command when it is done"
        )
    summary = record["summary"]
    diverged = summary["status"][0] == "diverged"
    trained = train.load_trained(train_dir, step=None, seed=0)
    x, y = train.build_run(trained.config).source.probe_batch(int(config["probe_batch_size"]))
    rhos = [float(r) for r in config["fidelity_rhos"]]
    fidelity = second_order_fidelity(
        trained.objective, trained.params, (jnp.asarray(x), jnp.asarray(y)), jnp.asarray(rhos)
    )
    fidelity = jax.device_get(fidelity)
    step = int(trained.step)
    line: dict[str, Any] = {
        "step": step,
        "epoch": float(summary["epochs"]) * step / max(int(summary["steps"]), 1),
        "diverged": [diverged],
        "fidelity_rhos": rhos,
    }
    for predictor in tracking.FIDELITY_PREDICTORS:
        for metric in tracking.FIDELITY_METRICS:
            values = [float(v) for v in getattr(getattr(fidelity, predictor), metric)]
            line[tracking.fidelity_key(predictor, metric)] = [values]
    tracking.check_fidelity_record(line)
    text = json.dumps(to_jsonable(line), allow_nan=False)  # NaN -> null, the records' policy
    write_text_atomic(Path(workdir) / tracking.CURVATURE_FILE, text + "\n")
    return dict(summary)


def validate(workdir: str, summary: Mapping[str, Any]) -> None:
    """A stored measurement: a valid training summary and its fidelity record.

    Raises:
      ValueError: naming what is missing or wrong.
    """
    from nmelab.train import tracking

    recipes.validate_training(workdir, summary)
    path = Path(workdir) / tracking.CURVATURE_FILE
    if not path.is_file():
        raise ValueError(f"{path}: the fidelity record is missing")
    tracking.check_fidelity_record(json.loads(path.read_text().splitlines()[0]))
