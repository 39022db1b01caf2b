"""CIFAR-10, WRN-28-10 (36.5 M params): the paper's CIFAR recipe (§3).

Command::

    nmelab train --config configs/cifar10_wrn28_10.py --workdir runs/wrn28_10 \\
        --set data_dir=/data/cifar10 --set regularizer=gradient_penalty \\
        --set regularizer_params="{'rho': 0.1, 'p': 1}" --set activation=gelu

Hyperparameters of Zagoruyko & Komodakis (2016): SGD with Nesterov momentum 0.9, lr 0.1, L2 weight
decay 5e-4 (added to the gradient before momentum, PyTorch style), batch 128, 200 epochs
(78,000 steps), random crop with 4-pixel padding and horizontal flip, per-channel standardisation,
no dropout. As the paper did, the step schedule (x0.2 at epochs 60, 120, 160) is replaced by
cosine decay to 0.

Expected: about 96 % test accuracy (ReLU, plain SGD; Zagoruyko & Komodakis report 95.8 %).
Time: hours on one modern GPU (not measured here); a regularizer multiplies it by its cost over
SGD (``benchmarks/bench_training.py``). Not runnable on a CPU: one step of batch 128 takes tens of
seconds on 2 cores.
"""

from nmelab.train import default_config


def get_config():
    config = default_config()
    config.dataset = "cifar10"
    config.data_dir = None  # --set data_dir=/path/to/cifar10
    config.model = "wrn_28_10"
    config.activation = "relu"
    config.learning_rate = 0.1
    config.momentum = 0.9
    config.nesterov = True
    config.weight_decay = 5e-4
    config.warmup_epochs = 0.0
    config.num_epochs = 200.0
    config.batch_size = 128
    config.eval_batch_size = 500
    config.augment = True
    config.eval_every_epochs = 5
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    return config
