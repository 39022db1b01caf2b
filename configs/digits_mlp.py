"""scikit-learn digits, MLP 64-256-256-10, SGD: the quick smoke-test recipe.

Command (from the repository root)::

    nmelab train --config configs/digits_mlp.py --workdir runs/digits_mlp

Expected: >= 97 % test accuracy in 20 epochs (220 steps), about 15-30 s on a 2-core CPU, most of
it compilation. Digits sits at a ~98 % ceiling for every method, so it is a smoke test, not a
benchmark of regularizers. Try ``--set num_seeds=3`` (vmapped seeds) or
``--set regularizer=sam --set regularizer_params.rho=0.1``.
"""

from nmelab.train import default_config


def get_config():
    config = default_config()
    config.dataset = "digits"
    config.model = "mlp"
    config.activation = "relu"
    config.learning_rate = 0.1
    config.momentum = 0.9
    config.weight_decay = 0.0
    config.num_epochs = 20.0
    config.batch_size = 128
    config.eval_batch_size = 512
    config.eval_every_epochs = 5
    config.log_every_steps = 20
    config.checkpoint_every_steps = 100
    return config
