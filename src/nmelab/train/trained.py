"""A finished (or checkpointed) run, loaded for analysis: :func:`load_trained` -> :class:`TrainedRun`.

>>> run = nmelab.train.load_trained("runs/digits")                    # doctest: +SKIP
>>> nmelab.trace_split(run.objective, run.params, batch, key, 64)     # doctest: +SKIP

The objective is the *eval-mode* one (BatchNorm with its running statistics bound), the function
whose curvature :mod:`nmelab.train.tracking` measures during training: a sum of per-example losses,
so the Hessian split of paper eq. 2 is the textbook one (see :mod:`nmelab.objective`).
Loading reads only: a damaged checkpoint is skipped with a warning but never moved.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_collections

from nmelab import data as nmedata
from nmelab._io import read_json
from nmelab.objective import Objective
from nmelab.train.checkpoint import Checkpointer
from nmelab.train.config import config_from_dict
from nmelab.train.run import build_run
from nmelab.train.state import zero_metrics
from nmelab.train.train import abstract_state
from nmelab.types import Params

__all__ = ["TrainedRun", "load_trained"]


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """One seed of a trained run.

    Attributes:
      config: the run's config, as saved in the workdir.
      step: the checkpoint step restored.
      objective: the eval-mode objective (model state, e.g. BatchNorm statistics, bound).
      params: one seed's parameters (no seed axis).
      dataset: the run's dataset, loaded from its config.
    """

    config: ml_collections.ConfigDict
    step: int
    objective: Objective
    params: Params
    dataset: nmedata.Dataset | nmedata.ImageFolder


def load_trained(workdir: str | Path, *, step: int | None = None, seed: int = 0) -> TrainedRun:
    """Load seed ``seed`` of the run in ``workdir`` at checkpoint ``step`` (default: the newest good).

    Args:
      workdir: a ``nmelab train`` / :func:`nmelab.train.train_and_evaluate` workdir.
      step: the checkpoint step; ``None`` takes the newest checkpoint that verifies (the final
        one of a finished run).
      seed: which of the run's ``num_seeds`` seeds (``0 .. num_seeds - 1``, not the seed value).

    Raises:
      ValueError: a missing workdir, an unreadable ``config.json``, no checkpoint, a ``step``
        without a checkpoint, a damaged checkpoint, or a ``seed`` out of range; the message names
        the path and what to do.
    """
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ValueError(f"workdir {workdir}: no such folder (train a run there first)")
    config = config_from_dict(read_json(workdir / "config.json"))
    if not (isinstance(seed, int) and 0 <= seed < config.num_seeds):
        raise ValueError(
            f"seed: expected an index 0..{config.num_seeds - 1} into the run's seeds, got {seed!r}"
        )
    run = build_run(config)
    checkpointer = Checkpointer(workdir, config.max_checkpoints, create=False)
    try:
        like = (abstract_state(run), zero_metrics(run.num_seeds))
        if step is None:
            restored = checkpointer.restore_newest_good(*like, set_aside=False)
            if restored is None:
                raise ValueError(
                    f"{checkpointer.directory}: no checkpoint (train the run first, or resume it "
                    "with the same nmelab train command)"
                )
        else:
            restored = checkpointer.restore(step, *like)
    finally:
        checkpointer.close()
    state = restored[0].seed(seed)
    return TrainedRun(
        config=config,
        step=int(state.step),
        objective=run.eval_objective(state.batch_stats),
        params=state.params,
        dataset=run.source.dataset,
    )
