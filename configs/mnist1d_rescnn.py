"""MNIST-1D, the residual 1D CNN with BatchNorm (``rescnn1d``: stem + 3 residual blocks, 64 channels).

Command::

    nmelab train --config configs/mnist1d_rescnn.py --workdir runs/mnist1d_rescnn

Everything as ``configs/mnist1d_cnn.py`` (SGD with momentum 0.9, lr 0.1, cosine decay, batch
128, 30 epochs) except the model and weight decay 5e-4 (not on BatchNorm parameters and biases): closer to the paper's BN ResNets than the 3-layer CNN-BN.
Expected: about 97-98 % test accuracy with ReLU or GELU (not yet measured over seeds); about 3-4×
the cost of CNN-BN on a CPU.

``nmelab reproduce --scale small`` loads it with ``get_config("scale=small")`` (Fig. 2, 4, 6):
2,000 training examples (half the cost per run; the baseline still reaches 98.6 %, measured for
ReLU and GELU at seed 0 before any ``small`` penalty run, against 98.0 % at 1,000), 10,000 test
examples, no periodic evaluation or checkpoints.
"""

from pathlib import Path

from nmelab.train import load_config


def get_config(arg=None):
    """The recipe; ``arg``: ``None`` (standalone) or ``"scale=small"``."""
    scale = dict(kv.split("=", 1) for kv in arg.split(",")).get("scale") if arg else None
    config = load_config(Path(__file__).with_name("mnist1d_cnn.py"))
    config.model = "rescnn1d"
    config.weight_decay = 5e-4
    config.weight_decay_mask = "no_bn_and_bias"
    if scale == "small":
        config.eval_every_epochs = 0
        config.checkpoint_every_steps = 0
        config.final_train_eval = True
        config.dataset_kwargs.num_train = 2000
        config.dataset_kwargs.num_test = 10000
    return config
