"""MNIST-1D, the pilot's 1D CNN (3 conv layers of 32 channels, kernel 5; about 10.8k params).

Command::

    nmelab train --config configs/mnist1d_cnn.py --workdir runs/mnist1d_cnn

SGD with momentum 0.9, lr 0.1, cosine decay, batch 128, 30 epochs (930 steps). Expected (pilot):
about 95 % test accuracy with ReLU or GELU (97.0 % measured here for seed 0). About 7-20 s on a
2-core CPU for one seed. The BatchNorm
variant ("CNN-BN", about 96.8 %): ``--set model=cnn1d_bn``.
"""

from nmelab.train import default_config


def get_config():
    config = default_config()
    config.dataset = "mnist1d"
    config.model = "cnn1d"
    config.activation = "relu"
    config.learning_rate = 0.1
    config.momentum = 0.9
    config.num_epochs = 30.0
    config.batch_size = 128
    config.eval_batch_size = 1000
    config.eval_every_epochs = 5
    config.log_every_steps = 50
    config.checkpoint_every_steps = 300
    return config
