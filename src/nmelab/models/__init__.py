"""Flax (linen) models, looked up by name: :func:`get` and :func:`param_count`.

Families (one file each): :class:`MLP`, :class:`CNN` (1D signals and 2D images, optional
BatchNorm), :class:`ResCNN` (residual CNN with BatchNorm, e.g. for MNIST-1D), :class:`WideResNet`
(pre-activation, Zagoruyko & Komodakis) and :class:`ResNet` (``ResNet18``/``ResNet50`` as in flax
``examples/imagenet``). Registered names, with the presets they apply (keyword arguments to
:func:`get` override them):

=================  ===============================================================================
``mlp``            MLP, hidden widths ``(256, 256)``
``mlp_tiny``       MLP, hidden widths ``(16, 16)``
``cnn``            CNN, 3 conv layers of 32 channels, kernel 5, no BN
``cnn1d``          same as ``cnn`` (the MNIST-1D CNN of ``configs/mnist1d_cnn.py``, 10,826 params)
``cnn1d_bn``       ``cnn1d`` with BatchNorm ("CNN-BN", 10,922 params + 192 running statistics)
``cnn_tiny``       CNN, 2 conv layers of 4 channels, kernel 3, no BN
``cnn_bn_tiny``    ``cnn_tiny`` with BatchNorm
``rescnn1d``       ResCNN, stem + 3 residual blocks of 64 channels (6 block convs), BN; 75,466
``rescnn_tiny``    ResCNN, stem + 1 block of 4 channels, BN
``wrn``            WideResNet, default depth 28, width 10
``wrn_28_10``      WRN-28-10 (36,479,194 params on CIFAR-10)
``wrn_16_4``       WRN-16-4 (2,748,890 params on CIFAR-10)
``wrn_tiny``       WRN-10-1 (one block per group, 77,850 params on 32x32x3 or smaller)
``resnet18``       ResNet-18, ImageNet stem, 1000 classes, 11,689,512 params (``stem="cifar"``
                   for 32x32 inputs)
``resnet50``       ResNet-50, 1000 classes (25,557,032 params)
``resnet_tiny``    ResNet, stages ``(1, 1)``, 4 filters, basic blocks, 10 classes
=================  ===============================================================================

Calling convention. Every model is called as ``model.apply(variables, x, train=...)`` and returns
``(N, num_classes)`` logits. Models without BatchNorm accept ``train`` and ignore it, so a trainer
can treat all models uniformly. Models with BatchNorm refuse ``train=None``: the mode is never
implicit.

BatchNorm policy. Every BatchNorm layer has momentum 0.9 and epsilon 1e-5, keeps its running
mean/variance in the ``batch_stats`` collection, and uses ``use_running_average = not train``:

* ``train=True`` normalises with the statistics *of the current batch* and updates the running
  statistics, so apply it with ``mutable=["batch_stats"]`` and keep the returned collection. The
  output on one example then depends on every example in the batch: a curvature quantity (Hessian,
  Gauss-Newton, NME) computed in train mode is the curvature of that batch-coupled function, not a
  sum of per-example curvatures.
* ``train=False`` normalises with the running statistics: a per-example function of the input, and
  ``batch_stats`` is not changed.

``bn_axis_name`` (default ``None``) makes train-mode statistics average over a named mapped axis
(``shard_map``/``pmap``); under ``jit`` with sharded inputs no axis name is needed.

``bn_batch`` (``ResNet`` and ``WideResNet``; default ``None``) computes train-mode statistics over
each group of ``bn_batch`` consecutive examples instead of the whole batch (ghost BatchNorm,
:class:`GhostBatchNorm`): Goyal et al.'s ResNet-50 recipe normalises over the 32 images of each
worker, whatever the total batch. The batch must be a multiple of ``bn_batch`` in train mode.

Activations are given by name (``activation="gelu"``) and parameters
(``activation_params=(("beta", 3.0),)``; :func:`get` also accepts a dict) and resolved through
:func:`nmelab.activations.get`.

Flax creates float32 parameters even with ``jax_enable_x64``; cast them for float64 work.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax

from nmelab.models._common import (
    BN_EPSILON,
    BN_MOMENTUM,
    GhostBatchNorm,
    freeze_activation_params,
)
from nmelab.models.cnn import CNN, ResCNN
from nmelab.models.mlp import MLP
from nmelab.models.resnet import ResNet, ResNet18, ResNet50
from nmelab.models.wide_resnet import WideResNet

_PRESETS: dict[str, tuple[Any, dict[str, Any]]] = {
    "mlp": (MLP, {"features": (256, 256)}),
    "mlp_tiny": (MLP, {"features": (16, 16)}),
    "cnn": (CNN, {"channels": (32, 32, 32), "kernel_size": 5}),
    "cnn1d": (CNN, {"channels": (32, 32, 32), "kernel_size": 5}),
    "cnn1d_bn": (CNN, {"channels": (32, 32, 32), "kernel_size": 5, "use_bn": True}),
    "cnn_tiny": (CNN, {"channels": (4, 4), "kernel_size": 3}),
    "cnn_bn_tiny": (CNN, {"channels": (4, 4), "kernel_size": 3, "use_bn": True}),
    "rescnn1d": (ResCNN, {"widths": (64, 64, 64), "kernel_size": 3}),
    "rescnn_tiny": (ResCNN, {"widths": (4,), "kernel_size": 3}),
    "wrn": (WideResNet, {}),
    "wrn_28_10": (WideResNet, {"depth": 28, "width": 10}),
    "wrn_16_4": (WideResNet, {"depth": 16, "width": 4}),
    "wrn_tiny": (WideResNet, {"depth": 10, "width": 1}),
    "resnet18": (ResNet, {"stage_sizes": (2, 2, 2, 2), "block": "basic"}),
    "resnet50": (ResNet, {"stage_sizes": (3, 4, 6, 3), "block": "bottleneck"}),
    "resnet_tiny": (
        ResNet,
        {"stage_sizes": (1, 1), "block": "basic", "num_filters": 4, "num_classes": 10},
    ),
}

NAMES: tuple[str, ...] = tuple(_PRESETS)
"""Every name :func:`get` accepts."""


def names() -> tuple[str, ...]:
    """Return the registered model names."""
    return NAMES


def get(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``, with ``kwargs`` overriding its preset fields.

    Args:
      name: one of :data:`NAMES`.
      **kwargs: module fields, e.g. ``num_classes=10, activation="beta_gelu",
        activation_params={"beta": 3.0}``. ``activation_params`` may be a dict; it is stored as a
        sorted tuple of pairs so the module stays hashable.

    Returns:
      An unbound flax module; ``module.init(key, x, train=False)`` gives its variables.

    Raises:
      ValueError: unknown ``name`` (the message lists the choices).
      TypeError: a keyword that is not a field of the model (the message lists the fields).
    """
    if not isinstance(name, str) or name not in _PRESETS:
        raise ValueError(f"unknown model {name!r}; choices: {', '.join(NAMES)}")
    cls, preset = _PRESETS[name]
    fields = {f for f in cls.__dataclass_fields__ if f not in ("parent", "name")}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise TypeError(
            f"model {name!r} ({cls.__name__}) has no field(s) {', '.join(unknown)}; "
            f"fields: {', '.join(sorted(fields))}"
        )
    config = {**preset, **kwargs}
    if "activation_params" in config:
        config["activation_params"] = freeze_activation_params(config["activation_params"])
    return cls(**config)


def param_count(params: Any) -> int:
    """Total number of scalars in a pytree of arrays (or of ``jax.ShapeDtypeStruct`` leaves).

    Pass ``variables["params"]`` to count trainable parameters only; BatchNorm running statistics
    live in ``variables["batch_stats"]``. Works on the output of
    ``jax.eval_shape(model.init, ...)``, which counts a large model without allocating it.
    """
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "CNN",
    "MLP",
    "GhostBatchNorm",
    "NAMES",
    "ResCNN",
    "ResNet",
    "ResNet18",
    "ResNet50",
    "WideResNet",
    "get",
    "names",
    "param_count",
]
