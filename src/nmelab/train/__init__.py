"""Training: a forkable SGD trainer with batched seeds, checkpoints, resume and curvature tracking.

The public entry point is :func:`train_and_evaluate` ``(config, workdir) -> summary``; configs
are ``ml_collections.ConfigDict`` s (:func:`default_config`, :func:`load_config` for
``configs/*.py``, :func:`apply_overrides` for ``--set key=value``). The pieces, each usable alone:

* :mod:`~nmelab.train.config` - config keys, loading and overrides;
* :mod:`~nmelab.train.optim` - SGD + momentum + L2 weight decay + warmup/cosine schedule (optax);
* :mod:`~nmelab.train.state` - :class:`TrainState` with a leading seed axis;
* :mod:`~nmelab.train.step` - the jitted init, train step (any regularizer) and eval step;
* :mod:`~nmelab.train.sources` - device-resident or host-fed batches;
* :mod:`~nmelab.train.checkpoint` - Orbax checkpoints;
* :mod:`~nmelab.train.tracking` - curvature tracking (tr H, tr GN, tr NME, λmax, NME diagonal);
* :mod:`~nmelab.train.loop` - the loop, logs, divergence and collapse, resume.
"""

from nmelab.train.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    default_config,
    load_config,
)
from nmelab.train.loop import (
    Setup,
    classify,
    evaluate,
    init_state,
    restore_state,
    setup,
    train_and_evaluate,
)
from nmelab.train.optim import learning_rate_schedule, sgd
from nmelab.train.state import TrainState
from nmelab.train.step import Program, ProgramSpec, make_program

__all__ = [
    "Program",
    "ProgramSpec",
    "Setup",
    "TrainState",
    "apply_overrides",
    "classify",
    "config_from_dict",
    "config_to_dict",
    "default_config",
    "evaluate",
    "init_state",
    "learning_rate_schedule",
    "load_config",
    "make_program",
    "restore_state",
    "setup",
    "sgd",
    "train_and_evaluate",
]
