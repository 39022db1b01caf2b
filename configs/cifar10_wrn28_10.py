"""CIFAR-10, WRN-28-10 (36.5 M params): the paper's CIFAR recipe (§3).

Command::

    nmelab train --config configs/cifar10_wrn28_10.py --workdir runs/wrn28_10 \\
        --set data_dir=/data/cifar10 --set regularizer=gradient_penalty \\
        --set regularizer_params="{'rho': 0.1, 'p': 1}" --set activation=gelu

The paper (§3): "WideResnet 28-10 ... with the same setup and hyper-parameters as Zagoruyko &
Komodakis (2016), except for the use of cosine learning rate decay". Zagoruyko & Komodakis (Z&K) §3
give SGD with Nesterov momentum 0.9 (dampening 0), initial lr 0.1, weight decay 5e-4, batch 128,
200 epochs with the lr multiplied by 0.2 at epochs 60, 120 and 160 (replaced here by cosine decay to
0, per the paper), and random crops of the image padded by 4 pixels *with reflections* plus
horizontal flips. Their code decays every parameter (BN included), as does google-research/sam.
Inputs are standardised per channel.

Dropout: Z&K report WRN-28-10 on CIFAR-10 both without dropout and with dropout 0.3 between the
two convolutions of each block. The paper does not say which; the model default is 0 (no dropout),
``--set model_kwargs.dropout_rate=0.3`` gives the other.

SAM and weight decay: ``sam_decay_in_loss=True`` puts ``(λ/2)‖θ‖²`` inside the loss that SAM/USAM
perturb, as google-research/sam (the reference implementation of SAM) does; it changes nothing for
the other regularizers. ``--set sam_decay_in_loss=False`` keeps the decay in the optimizer only.

Expected: about 96 % test accuracy (ReLU, plain SGD; Z&K report a test error of about 4 % for
WRN-28-10, 3.89 % with dropout 0.3).
Time: hours on one modern GPU; ``docs/gpu.md`` gives per-regularizer estimates. Not runnable on a
CPU: one step of batch 128 takes tens of seconds on 2 cores.
"""

from nmelab.train import default_config


def get_config():
    config = default_config()
    config.dataset = "cifar10"
    config.data_dir = None  # --set data_dir=/path/to/cifar10
    config.model = (
        "wrn_28_10"  # paper §3: WRN-28-10 (model default dropout_rate 0: Z&K, no dropout)
    )
    config.activation = "relu"  # Z&K: ReLU; the paper's experiments vary it (ReLU, GELU, β-GELU)
    config.learning_rate = 0.1  # Z&K §3: initial learning rate 0.1
    config.lr_schedule = "cosine"  # paper §3: cosine decay (Z&K: x0.2 at epochs 60, 120, 160)
    config.warmup_epochs = 0.0  # Z&K §3: no warmup
    config.momentum = 0.9  # Z&K §3: momentum 0.9, dampening 0
    config.nesterov = True  # Z&K §3: "SGD with Nesterov momentum"
    config.weight_decay = 5e-4  # Z&K §3: weight decay 0.0005
    config.weight_decay_mask = "all"  # Z&K's code and google-research/sam: every parameter
    config.sam_decay_in_loss = True  # google-research/sam: the decay term is inside SAM's loss
    config.num_epochs = 200.0  # Z&K §3: 200 epochs (78,000 steps at batch 128)
    config.batch_size = 128  # Z&K §3: minibatch size 128
    config.augment = True  # Z&K §3: random crop of the 4-px reflection-padded image + flip
    config.eval_batch_size = 500
    config.eval_every_epochs = 5
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    return config
