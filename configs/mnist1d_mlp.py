"""MNIST-1D (4000 train / 1000 test, generated locally), MLP 40-256-256-10: the pilot's MLP recipe.

Command::

    nmelab train --config configs/mnist1d_mlp.py --workdir runs/mnist1d_mlp

SGD with momentum 0.9, lr 0.2, cosine decay, batch 128, 60 epochs (1860 steps). Expected (pilot,
3 seeds): about 71 % test accuracy (ReLU) and 72 % (GELU), 100 % train accuracy; an MLP plateaus
there on MNIST-1D (73.7 % measured here for seed 0). About 6-15 s on a 2-core CPU for one seed;
``--set num_seeds=3`` costs little more (the seeds share one compiled program).

``nmelab reproduce`` loads this file with ``get_config("scale=quick")`` / ``"scale=small"``: the
same training, no periodic evaluation or checkpoints (short runs: a rerun is cheaper); at
``quick`` 40 epochs instead of 60 (1240 steps), chosen for cost - the quick scale must fit 10
minutes on two cores - before any quick-scale run of this version was judged; at ``small`` the
full 60 epochs and a 10,000-example test set.
"""

from nmelab.train import default_config


def get_config(arg=None):
    """The recipe; ``arg``: ``None`` (standalone), ``"scale=quick"`` or ``"scale=small"``."""
    scale = dict(kv.split("=", 1) for kv in arg.split(",")).get("scale") if arg else None
    config = default_config()
    config.dataset = "mnist1d"
    config.model = "mlp"
    config.activation = "relu"
    config.learning_rate = 0.2
    config.momentum = 0.9
    config.num_epochs = 60.0
    config.batch_size = 128
    config.eval_batch_size = 1000
    config.eval_every_epochs = 10
    config.log_every_steps = 100
    config.checkpoint_every_steps = 500
    if scale in ("quick", "small"):
        config.eval_every_epochs = 0
        config.checkpoint_every_steps = 0
        config.final_train_eval = True
    if scale == "quick":
        config.num_epochs = 40.0
    if scale == "small":
        config.dataset_kwargs.num_train = 4000
        config.dataset_kwargs.num_test = 10000
    return config
