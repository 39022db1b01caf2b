"""CIFAR-10, WRN-16-4 (2.75 M params): the paper's CIFAR recipe on a smaller WideResNet.

Command (``data_dir`` holds ``cifar-10-batches-bin`` or ``cifar-10-batches-py``)::

    nmelab train --config configs/cifar10_wrn16_4.py --workdir runs/wrn16_4 \\
        --set data_dir=/data/cifar10

Everything as in ``configs/cifar10_wrn28_10.py`` (Zagoruyko & Komodakis 2016: SGD with Nesterov
momentum 0.9, lr 0.1, weight decay 5e-4 on every parameter, batch 128, 200 epochs, random crop of
the 4-pixel reflection-padded image + horizontal flip; cosine decay as in the paper) except the
model. The paper itself uses WRN-28-10 only; WRN-16-4 is a cheaper stand-in.

Expected: about 95 % test accuracy (Zagoruyko & Komodakis report 94.98 % for WRN-16-4).
Time: about an hour or two on one modern GPU (not measured here); not practical on a 2-core CPU
(seconds per step, see ``benchmarks/bench_training.py``).
"""

from pathlib import Path

from nmelab.train import load_config


def get_config():
    config = load_config(Path(__file__).with_name("cifar10_wrn28_10.py"))
    config.model = "wrn_16_4"  # Z&K: WRN-16-4, 2.7 M parameters
    return config
