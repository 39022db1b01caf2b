"""Train the tiny config in one process of a (possibly multi-process) CPU run; print a JSON summary.

    python _multihost_worker.py --devices 2 --num-processes 2 --process-id I --port P --workdir W
    python _multihost_worker.py --devices 1 --workdir W                       # the reference

Sets ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before importing jax, calls
:func:`nmelab.parallel.initialize` (``jax.distributed`` on localhost when ``--num-processes > 1``),
runs :func:`nmelab.train.train_and_evaluate` and prints, as the last stdout line, the summary's
losses and accuracies, the logged training losses and where the run's arrays lived.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def tiny_config(**overrides):
    """The trainer tests' tiny config (``tests/train/_train_helpers.py``), checkpointing too."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    from _train_helpers import tiny_config as trainer_tiny_config

    return trainer_tiny_config(**{"checkpoint_every_steps": 4, **overrides})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"

    import nmelab.parallel as par

    if args.num_processes > 1:
        par.initialize(
            f"localhost:{args.port}",
            args.num_processes,
            args.process_id,
            initialization_timeout=120,
        )
    else:
        par.initialize()  # no cluster in the environment: a no-op
    import jax

    from nmelab.train import metrics_io, train_and_evaluate
    from nmelab.train.config import parse_value

    overrides = dict(item.split("=", 1) for item in args.set)
    config = tiny_config(**{k: parse_value(v) for k, v in overrides.items()})
    summary = train_and_evaluate(config, args.workdir)
    info = par.process_info()
    records = metrics_io.read_jsonl(os.path.join(args.workdir, "metrics.jsonl"))
    train_losses = [r["loss"] for r in records if r.get("split") == "train"]
    print(
        json.dumps(
            {
                "process_index": info.process_index,
                "process_count": info.process_count,
                "device_count": info.device_count,
                "mesh": str(par.DataParallel.from_config(config)),
                "summary": {
                    k: summary[k]
                    for k in (
                        "test_loss",
                        "test_accuracy",
                        "train_loss",
                        "train_accuracy",
                        "steps",
                        "status",
                    )
                },
                "train_losses": train_losses,
                "checkpoints": sorted(os.listdir(os.path.join(args.workdir, "checkpoints"))),
                "jax": jax.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
