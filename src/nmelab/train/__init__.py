"""Training: a forkable SGD trainer with batched seeds, checkpoints, resume and curvature tracking.

The entry point is :func:`train_and_evaluate` ``(config, workdir) -> summary``; configs are
``ml_collections.ConfigDict`` s (:func:`default_config`, :func:`load_config` for ``configs/*.py``,
:func:`apply_overrides` for ``--set key=value``). To fork the trainer, read
:mod:`~nmelab.train.train` top to bottom. The pieces, each usable alone:

* :mod:`~nmelab.train.config` - config keys, loading, overrides and checks;
* :mod:`~nmelab.train.run` - :func:`build_run`: the config turned into a frozen :class:`Run`, once;
* :mod:`~nmelab.train.train` - the pure single-seed :func:`train_step`, evaluation and the loop;
* :mod:`~nmelab.train.seeds` - several seeds in one compiled step (``vmap`` or unrolled);
* :mod:`~nmelab.train.sources` - one batch-iterator interface for device-held and host-fed data;
* :mod:`~nmelab.train.state` - :class:`TrainState`;
* :mod:`~nmelab.train.optim` - SGD + momentum + L2 weight decay + warmup/cosine schedule (optax);
* :mod:`~nmelab.train.checkpoint` - Orbax checkpoints, verified on restore;
* :mod:`~nmelab.train.tracking` - curvature tracking (tr H, tr GN, tr NME, λmax, NME diagonal);
* :mod:`~nmelab.train.workdir` - the run's files, clocks, records and summary (:func:`classify`);
* :mod:`~nmelab.train.trained` - :func:`load_trained`: one seed of a trained run, for analysis.
"""

from nmelab.train.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    default_config,
    load_config,
)
from nmelab.train.optim import learning_rate_schedule, sgd
from nmelab.train.run import Run, build_run
from nmelab.train.state import TrainState
from nmelab.train.train import (
    evaluate,
    init_state,
    make_eval_step,
    make_train_step,
    restore_state,
    train_and_evaluate,
    train_step,
)
from nmelab.train.trained import TrainedRun, load_trained
from nmelab.train.workdir import classify

__all__ = [
    "Run",
    "TrainState",
    "TrainedRun",
    "apply_overrides",
    "build_run",
    "classify",
    "config_from_dict",
    "config_to_dict",
    "default_config",
    "evaluate",
    "init_state",
    "learning_rate_schedule",
    "load_config",
    "load_trained",
    "make_eval_step",
    "make_train_step",
    "restore_state",
    "sgd",
    "train_and_evaluate",
    "train_step",
]
