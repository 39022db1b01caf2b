"""A config turned into what training needs, once: :func:`build_run` returns a frozen :class:`Run`.

Everything the trainer derives from its config is computed here and nowhere else: the data source,
the model, the step counts, the learning-rate schedule and optimizer, the regularizer, how the
seeds are batched, and the mesh. The jitted functions of :mod:`nmelab.train.train` close over a
:class:`Run`; nothing inside them reads the config.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from nmelab import data as nmedata
from nmelab import models, parallel, regularizers
from nmelab.objective import Objective
from nmelab.train import config as config_lib
from nmelab.train import optim
from nmelab.train.seeds import resolve_seed_batching
from nmelab.train.sources import DeviceSource, HostSource, make_source

__all__ = ["IMAGE_FOLDER_KEYS", "STEP_INDEPENDENT_KEYS", "Run", "build_run", "load_dataset"]

IMAGE_FOLDER_KEYS = ("image_size", "resize_size")
"""``dataset_kwargs`` read by the ImageNet batch loader (crop side, evaluation resize)."""

STEP_INDEPENDENT_KEYS = (
    "seed",
    "regularizer_params",
    "progress",
    "log_every_steps",
    "eval_every_epochs",
    "checkpoint_every_steps",
    "max_checkpoints",
    "final_train_eval",
    "curvature",
    "data_dir",
    "num_workers",
    "eval_batch_size",
)
"""Config keys the compiled steps do not depend on: runs that differ only in these share them
(regularizer hyperparameters are traced leaves of the regularizer argument; the rest is host-side)."""


def _check_kwargs(fn: Any, kwargs: dict[str, Any], key: str, fixed: tuple[str, ...] = ()) -> None:
    """Refuse keyword arguments ``fn`` does not take, naming ``config.<key>`` and its parameters."""
    parameters = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = sorted(set(parameters) - {"self", *fixed})
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        raise ValueError(
            f"config.{key}: {', '.join(unknown)} is not a parameter of {fn.__name__} "
            f"(parameters: {', '.join(accepted)})"
        )


def load_dataset(config: ml_collections.ConfigDict) -> nmedata.Dataset | nmedata.ImageFolder:
    """Load ``config.dataset`` with ``dataset_kwargs`` (and ``data_dir`` for cifar10/imagenet).

    Raises:
      ValueError: an unknown dataset, an unknown ``dataset_kwargs`` key, or cifar10/imagenet
        without ``data_dir``.
    """
    kwargs = dict(config.dataset_kwargs.to_dict())
    for key in IMAGE_FOLDER_KEYS:  # options of the image-folder loader, not of the listing
        kwargs.pop(key, None)
    if config.dataset not in nmedata.names():
        raise ValueError(
            f"config.dataset: unknown dataset {config.dataset!r}; choices: {nmedata.names()}"
        )
    _check_kwargs(getattr(nmedata, config.dataset), kwargs, "dataset_kwargs", ("data_dir",))
    if config.dataset in ("cifar10", "imagenet"):
        if not config.data_dir:
            raise ValueError(
                f"config.data_dir: dataset {config.dataset!r} is read from a local folder; "
                f"pass --set data_dir=/path/to/{config.dataset} (got None)"
            )
        kwargs["data_dir"] = config.data_dir
    return nmedata.get(config.dataset, **kwargs)


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
    """What a config means for training (built by :func:`build_run`; read-only).

    Attributes:
      config: the config (frozen).
      source: the data (:mod:`nmelab.train.sources`).
      model: the flax module.
      loss: the loss name.
      learning_rate_fn: the schedule, step -> learning rate.
      tx: the optimizer (:func:`nmelab.train.optim.sgd`).
      regularizer: the regularizer pytree (m-sharpness wrapped when configured).
      regularizer_record: the regularizer's hyperparameters as recorded in the summary.
      augment: random crop + flip inside the step.
      steps_per_epoch, total_steps: optimizer steps.
      num_params: trainable parameters of one seed's model.
      seed_batching: ``"vmap"`` or ``"unroll"`` (:mod:`nmelab.train.seeds`).
      mesh: the data-parallel mesh, ``None`` on one device in one process.
      eval_batch_size: evaluation batch (at most the larger split).
      compile_key: equal for runs whose compiled steps are the same program (the config without
        :data:`STEP_INDEPENDENT_KEYS`, and the data's size and shape).
    """

    config: ml_collections.FrozenConfigDict
    source: DeviceSource | HostSource
    model: nn.Module
    loss: str
    learning_rate_fn: optax.Schedule
    tx: optax.GradientTransformation
    regularizer: Any
    regularizer_record: dict[str, Any]
    augment: bool
    steps_per_epoch: int
    total_steps: int
    num_params: int
    seed_batching: str
    mesh: jax.sharding.Mesh | None
    eval_batch_size: int
    compile_key: str

    @property
    def num_seeds(self) -> int:
        """Seeds trained side by side."""
        return int(self.config.num_seeds)

    def eval_apply_fn(self, batch_stats: Any) -> Any:
        """``apply_fn(θ, x)`` in eval mode (running statistics): a per-example function of ``x``."""
        model = self.model

        def apply_fn(params: Any, x: jax.Array) -> jax.Array:
            variables = {"params": params}
            if batch_stats:
                variables["batch_stats"] = batch_stats
            return model.apply(variables, x, train=False)

        return apply_fn

    def eval_objective(self, batch_stats: Any) -> Objective:
        """The eval-mode objective (curvature tracking and analysis of a trained run)."""
        return Objective(self.eval_apply_fn(batch_stats), self.loss)


def _build_model(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
    model_kwargs = dict(config.model_kwargs.to_dict())
    if model_kwargs.pop("num_classes", num_classes) != num_classes:
        raise ValueError(
            f"config.model_kwargs.num_classes: the dataset {config.dataset!r} has "
            f"{num_classes} classes, got {config.model_kwargs.num_classes}"
        )
    model_kwargs.setdefault("activation", config.activation)
    if config.activation_params.to_dict():
        model_kwargs.setdefault("activation_params", config.activation_params.to_dict())
    try:
        return models.get(config.model, num_classes=num_classes, **model_kwargs)
    except TypeError as err:
        raise ValueError(f"config.model_kwargs: {err}") from err


def _compile_key(config: ml_collections.ConfigDict, source: DeviceSource | HostSource) -> str:
    values = config_lib.config_to_dict(config)
    for key in STEP_INDEPENDENT_KEYS:
        values.pop(key, None)
    facts = [type(source).__name__, source.num_train, list(source.input_shape), jax.process_count()]
    return json.dumps([values, facts], sort_keys=True)


def build_run(
    config: ml_collections.ConfigDict, dataset: nmedata.Dataset | nmedata.ImageFolder | None = None
) -> Run:
    """Check ``config``, load its data and derive the :class:`Run`.

    Args:
      config: a training config (:func:`nmelab.train.default_config` keys).
      dataset: an already loaded dataset to use instead of loading ``config.dataset``.

    Raises:
      ValueError: an invalid config (the message names the key), e.g. ``num_seeds > 1`` with
        host-fed data, or a batch larger than the training set.
    """
    config_lib.check_config(config)
    dataset = load_dataset(config) if dataset is None else dataset
    num_train = int(dataset.num_train)
    if config.batch_size > num_train:
        raise ValueError(
            f"config.batch_size: expected <= the {num_train} training examples, "
            f"got {config.batch_size}"
        )
    steps_per_epoch = num_train // config.batch_size
    total_steps = max(1, round(config.num_epochs * steps_per_epoch))
    source = make_source(
        dataset,
        config.data_on_device,
        config.batch_size,
        math.ceil(total_steps / steps_per_epoch),
        image_size=int(config.dataset_kwargs.get("image_size", 224)),
        num_workers=config.num_workers,
        resize_size=config.dataset_kwargs.get("resize_size"),
    )
    if config.num_seeds > 1 and not source.on_device:
        raise ValueError(
            f"config.num_seeds: {config.num_seeds} seeds are trained side by side in one "
            f"program, which needs the training set on the device; dataset {source.name!r} is "
            "host-fed (set num_seeds=1, or data_on_device=True for an in-memory dataset that fits)"
        )
    model = _build_model(config, source.num_classes)
    warmup_steps = min(total_steps, round(config.warmup_epochs * steps_per_epoch))
    schedule = optim.learning_rate_schedule(
        float(config.learning_rate), total_steps, warmup_steps, config.lr_schedule
    )
    tx = optim.sgd(
        schedule, config.momentum, config.nesterov, config.weight_decay, config.weight_decay_mask
    )
    regularizer_params = config.regularizer_params.to_dict()
    if config.sam_decay_in_loss and "weight_decay" in regularizers.hyperparameters(
        config.regularizer
    ):  # SAM/USAM perturb L + (λ/2)‖m ⊙ θ‖² with the optimizer's λ and mask (google-research/sam)
        regularizer_params["weight_decay"] = float(config.weight_decay)
        regularizer_params["weight_decay_mask"] = config.weight_decay_mask
    try:
        regularizer = regularizers.get(config.regularizer, **regularizer_params)
    except TypeError as err:
        raise ValueError(f"config.regularizer_params: {err}") from err
    data_parallel = parallel.DataParallel.from_config(config)
    x = jax.ShapeDtypeStruct((1, *source.input_shape), jnp.float32)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    param_shapes = jax.eval_shape(functools.partial(model.init, train=False), key, x)["params"]
    return Run(
        config=ml_collections.FrozenConfigDict(config),
        source=data_parallel.place_source(source),
        model=model,
        loss=config.loss,
        learning_rate_fn=schedule,
        tx=tx,
        regularizer=data_parallel.regularizer(regularizer),
        regularizer_record=regularizer.record(),
        augment=bool(config.augment) and source.augmentable,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        num_params=models.param_count(param_shapes),
        seed_batching=resolve_seed_batching(config.seed_batching, param_shapes),
        mesh=data_parallel.mesh,
        eval_batch_size=min(int(config.eval_batch_size), max(num_train, source.num_test)),
        compile_key=_compile_key(config, source),
    )
