"""ImageNet, ResNet-50 (25.6 M params): the paper's ImageNet recipe (§3).

Command (``data_dir`` holds ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``)::

    nmelab train --config configs/imagenet_resnet50.py --workdir runs/resnet50 \\
        --set data_dir=/data/imagenet --set num_workers=16

The paper (§3): "Resnet-50 ... with the same setup and hyper-parameters as Goyal et al. (2018),
except that we use cosine learning rate decay ... over 300 epochs". Goyal et al. (§2, §5.1) train
with SGD and Nesterov momentum 0.9, weight decay 1e-4 on every parameter except the BatchNorm γ and
β, BatchNorm statistics over n = 32 images per worker whatever the total batch kn, learning rate
0.1·kn/256 (the linear scaling rule) reached by a linear warmup over the first 5 epochs, and
initialise the last BN γ of every residual block to 0 and the fully-connected layer from
N(0, 0.01²); they train 90 epochs with the lr divided by 10 at epochs 30, 60 and 80, which the
paper replaces by cosine decay over 300 epochs. The initialisation is the ResNet model's own
(``nmelab.models.resnet``); the per-worker statistics are ``model_kwargs.bn_batch = 32`` (ghost
BatchNorm). Data: random-resized crop 224 + flip for training, centre crop 224 of the 256-resized
image for evaluation.

Batch size: the paper states none. Goyal et al. show the same accuracy for every kn from 256 to
8,192 when n = 32 and the lr follows 0.1·kn/256, so any such batch is their setup; we use 1,024
(lr 0.4), which fits one 8-GPU node or one large accelerator. ``--set batch_size=256
--set learning_rate=0.1`` (or any kn, keeping the rule) is the same recipe; the batch must stay a
multiple of ``bn_batch``.

SAM and weight decay: ``sam_decay_in_loss=True`` puts ``(λ/2)‖m ⊙ θ‖²`` (same λ and mask) inside
the loss that SAM/USAM perturb, as google-research/sam does; other regularizers are unaffected.

Expected: about 76.8 % top-1 for plain SGD with ReLU or GELU (the paper's §4 baseline).
Time: 300 epochs are about 375,000 steps at B = 1,024; ``docs/gpu.md`` has the estimates.
Not runnable on a CPU.
"""

from nmelab.train import default_config

BATCH_SIZE = 1024  # not stated by the paper; any kn with n = 32 is Goyal's setup (see above)


def get_config():
    config = default_config()
    config.dataset = "imagenet"
    config.data_dir = None  # --set data_dir=/path/to/imagenet
    config.dataset_kwargs = {"image_size": 224}  # Goyal / He et al.: 224x224 crops
    config.num_workers = 8
    config.model = "resnet50"  # paper §3: ResNet-50 (init of Goyal §5.1 built in)
    config.model_kwargs = {"bn_batch": 32}  # Goyal §2.3, §5.1: BN statistics over n = 32 images
    config.activation = "relu"  # Goyal: ReLU; the paper's experiments vary it (ReLU, GELU, ...)
    config.batch_size = BATCH_SIZE
    config.learning_rate = 0.1 * BATCH_SIZE / 256  # Goyal §2.1: linear scaling, 0.1 per 256
    config.lr_schedule = "cosine"  # paper §3: cosine decay (Goyal: /10 at epochs 30, 60, 80)
    config.warmup_epochs = 5.0  # Goyal §2.2: gradual warmup over 5 epochs
    config.momentum = 0.9  # Goyal §5.1: momentum m = 0.9
    config.nesterov = True  # Goyal §5.1: Nesterov momentum
    config.weight_decay = 1e-4  # Goyal §5.1: weight decay λ = 0.0001
    config.weight_decay_mask = "no_bn"  # Goyal §5.1: no weight decay on the BN γ and β
    config.sam_decay_in_loss = True  # google-research/sam: the decay term is inside SAM's loss
    config.num_epochs = 300.0  # paper §3: 300 epochs (Goyal: 90)
    config.eval_batch_size = 250
    config.eval_every_epochs = 5
    config.final_train_eval = False  # 1.28 M images; the training metrics are logged instead
    config.log_every_steps = 200
    config.checkpoint_every_steps = 5000
    return config
