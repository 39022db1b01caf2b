"""MNIST-1D, the pilot's 1D CNN with BatchNorm ("CNN-BN": 3 conv layers of 32 channels).

Command::

    nmelab train --config configs/mnist1d_cnn_bn.py --workdir runs/mnist1d_cnn_bn

Everything as ``configs/mnist1d_cnn.py`` (SGD with momentum 0.9, lr 0.1, cosine decay, batch
128, 30 epochs = 930 steps, no weight decay) except the BatchNorm model.
Expected (pilot): about 96.8 % test accuracy (ReLU) and 96.6 % (GELU), 100 % train accuracy.

``nmelab reproduce`` loads this file with ``get_config("scale=quick")`` (Fig. 2, 4, 6 at the
quick scale: 15 epochs instead of 30, chosen for cost - the quick scale must fit 10 minutes on
two cores - before any claim of this version was measured; SGD reached 98.4-98.8 % test accuracy
at 20 epochs and 65 % after 2) or ``"scale=small"`` (the mechanism's CNN, 30 epochs, 10,000 test examples);
both without periodic evaluation or checkpoints.
"""

from pathlib import Path

from nmelab.train import load_config


def get_config(arg=None):
    """The recipe; ``arg``: ``None`` (standalone), ``"scale=quick"`` or ``"scale=small"``."""
    scale = dict(kv.split("=", 1) for kv in arg.split(",")).get("scale") if arg else None
    config = load_config(Path(__file__).with_name("mnist1d_cnn.py"))
    config.model = "cnn1d_bn"
    config.weight_decay = 0.0
    if scale in ("quick", "small"):
        config.eval_every_epochs = 0
        config.checkpoint_every_steps = 0
        config.final_train_eval = True
    if scale == "quick":
        config.num_epochs = 15.0
    if scale == "small":
        config.dataset_kwargs.num_train = 4000
        config.dataset_kwargs.num_test = 10000
    return config
