"""Training configs: the defaults, loading ``configs/*.py`` files and ``--set key=value`` overrides.

A config is an ``ml_collections.ConfigDict``. Every config file in ``configs/`` defines
``get_config()``, starts from :func:`default_config` and overrides what its recipe needs, so every
key below always exists (big_vision / flax-examples style).

=======================  =========================================================================
key                      meaning
=======================  =========================================================================
dataset                  name for :func:`nmelab.data.get` (digits, mnist1d, synthetic, cifar10,
                         imagenet)
dataset_kwargs           extra keyword arguments of the loader (e.g. ``shape`` for synthetic)
data_dir                 folder of cifar10 / imagenet (``None`` for generated data)
data_on_device           keep the whole training set on the device and gather batches inside the
                         jitted step (needed for ``num_seeds > 1``); ``None``: on for digits,
                         mnist1d and synthetic, off for cifar10 and imagenet
num_workers              decoding processes of the ImageNet loader
model, model_kwargs      name and keyword arguments for :func:`nmelab.models.get`
activation               activation name (:func:`nmelab.activations.get`)
activation_params        its parameters, e.g. ``{"beta": 3.0}``
loss                     ``"cross_entropy"`` or ``"mse"``
regularizer              name for :func:`nmelab.regularizers.get` (``"none"`` is plain SGD)
regularizer_params       its hyperparameters, e.g. ``{"rho": 0.1}``
learning_rate            peak learning rate
lr_schedule              ``"cosine"`` (linear warmup, then cosine decay to 0) or ``"constant"``
momentum, nesterov       SGD momentum and Nesterov flag
weight_decay             L2 coefficient λ: ``λ θ`` is added to the update direction *before*
                         momentum (optax ``add_decayed_weights`` ahead of ``sgd``), i.e. the
                         gradient of ``(λ/2)‖θ‖²``, the PyTorch / Zagoruyko & Komodakis convention
weight_decay_mask        which leaves decay: ``"all"``, ``"no_bn"`` (not BN γ/β) or
                         ``"no_bn_and_bias"`` (only leaves with ndim > 1), see
                         :mod:`nmelab.regularizers.weight_decay`
sam_decay_in_loss        SAM/USAM: put ``(λ/2)‖m ⊙ θ‖²`` inside the loss the ascent step perturbs
                         (google-research/sam) instead of only in the optimizer; see
                         :mod:`nmelab.regularizers.sam`
warmup_epochs            linear warmup length (epochs, may be fractional)
num_epochs               training length; steps = num_epochs x (num_train // batch_size)
batch_size               per-step batch (per seed)
eval_batch_size          evaluation batch
eval_every_epochs        test evaluation period in epochs (0: only at the end)
final_train_eval         evaluate the whole training set (eval mode) at the end
seed, num_seeds          seeds ``seed, seed + 1, ...`` trained side by side in one program
seed_batching            ``"vmap"``, ``"unroll"`` (seeds one after another in the program) or
                         ``"auto"``: unroll convolutional models on CPU, where vmapped (grouped)
                         convolutions are 2-3x slower, vmap otherwise
log_every_steps          training-metric period
checkpoint_every_steps   Orbax checkpoint period (0: only at the end)
max_checkpoints          checkpoints kept
augment                  random crop + flip (images; ignored for other data)
progress                 rich progress bar (also off when stdout is not a terminal)
curvature.every_steps    curvature tracking period K (0: off)
curvature.num_probes     Hutchinson probes for the traces and the NME diagonal
curvature.probe_batch_size  size of the fixed probe batch (the first training examples)
curvature.lanczos_iters  Lanczos iterations for λmax(H)
curvature.fidelity_rhos  ρ values of the second-order fidelity (empty: skip)
curvature.exact_diagonal exact NME diagonal (P products; small models) instead of Hutchinson
mesh_shape               devices on the ``"data"`` mesh axis (:mod:`nmelab.parallel`): ``None`` =
                         every device, an int, a tuple or ``"2x2"``; the batch is split over it
m_sharpness              per-shard SAM / penalties (m = per-device batch) instead of global ones
=======================  =========================================================================
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

FREE_FORM_KEYS: tuple[str, ...] = (
    "dataset_kwargs",
    "model_kwargs",
    "activation_params",
    "regularizer_params",
)
"""Dict-valued keys whose sub-keys are free: ``--set regularizer_params.rho=0.1`` may add a key."""

RESUME_IGNORED_KEYS: tuple[str, ...] = ("progress", "data_dir", "num_workers")
"""Keys that may change between a run and its resumption (they do not change the computation)."""


def default_config() -> ml_collections.ConfigDict:
    """Return the config with every key at its default (a quick digits MLP run)."""
    config = ml_collections.ConfigDict()
    config.dataset = "digits"
    config.dataset_kwargs = ml_collections.ConfigDict()
    config.data_dir = ml_collections.FieldReference(None, field_type=str)
    config.data_on_device = ml_collections.FieldReference(None, field_type=bool)
    config.num_workers = 0
    config.model = "mlp"
    config.model_kwargs = ml_collections.ConfigDict()
    config.activation = "relu"
    config.activation_params = ml_collections.ConfigDict()
    config.loss = "cross_entropy"
    config.regularizer = "none"
    config.regularizer_params = ml_collections.ConfigDict()
    config.learning_rate = 0.1
    config.lr_schedule = "cosine"
    config.momentum = 0.9
    config.nesterov = False
    config.weight_decay = 0.0
    config.weight_decay_mask = "all"
    config.sam_decay_in_loss = False
    config.warmup_epochs = 0.0
    config.num_epochs = 10.0
    config.batch_size = 128
    config.eval_batch_size = 1000
    config.eval_every_epochs = 1
    config.final_train_eval = True
    config.seed = 0
    config.num_seeds = 1
    config.seed_batching = "auto"
    config.log_every_steps = 50
    config.checkpoint_every_steps = 0
    config.max_checkpoints = 2
    config.augment = False
    config.progress = True
    config.curvature = ml_collections.ConfigDict()
    config.curvature.every_steps = 0
    config.curvature.num_probes = 8
    config.curvature.probe_batch_size = 256
    config.curvature.lanczos_iters = 20
    config.curvature.fidelity_rhos = ()
    config.curvature.exact_diagonal = False
    # nmelab.parallel (issue 8): data-parallel mesh and m-sharpness
    config.mesh_shape = ml_collections.FieldReference(None, field_type=object)
    config.m_sharpness = False
    return config


def load_config(path: str | Path) -> ml_collections.ConfigDict:
    """Import a config file and return its ``get_config()``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: not a ``.py`` file, a syntax error (naming the file and line), no
        ``get_config``, or a ``get_config()`` that does not return a ``ConfigDict``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: no such file {str(path)!r}")
    if path.suffix != ".py":
        raise ValueError(f"config: expected a Python file ending in .py, got {str(path)!r}")
    spec = importlib.util.spec_from_file_location(f"nmelab_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise ValueError(f"config: {err.filename}:{err.lineno}: {err.msg}") from err
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"config: {str(path)!r} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(
            f"config: get_config() of {str(path)!r} must return an ml_collections.ConfigDict, "
            f"got {type(config).__name__}"
        )
    return config


def _check_int(config: ml_collections.ConfigDict, key: str, minimum: int = 1) -> None:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"config.{key}: expected an integer >= {minimum}, got {value!r}")


def _check_finite(config: ml_collections.ConfigDict, key: str, minimum: float, strict: bool):
    value = config[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(
            f"config.{key}: expected a finite number {relation} {minimum}, got {value!r}"
        )


def check_config(config: ml_collections.ConfigDict) -> None:
    """Check the keys the trainer relies on; errors name the key, the expectation and the value.

    Raises:
      ValueError: a value of the wrong kind or out of range.
    """
    for key in ("batch_size", "eval_batch_size", "num_seeds", "log_every_steps", "max_checkpoints"):
        _check_int(config, key)
    for key in ("checkpoint_every_steps", "eval_every_epochs", "num_workers"):
        _check_int(config, key, 0)
    _check_finite(config, "num_epochs", 0.0, strict=True)
    _check_finite(config, "learning_rate", 0.0, strict=False)
    _check_finite(config, "warmup_epochs", 0.0, strict=False)
    _check_finite(config, "weight_decay", 0.0, strict=False)
    if config.warmup_epochs > config.num_epochs:
        raise ValueError(
            f"config.warmup_epochs: expected <= num_epochs ({config.num_epochs}), "
            f"got {config.warmup_epochs}"
        )
    every = config.curvature.every_steps
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"config.curvature.every_steps: expected an integer >= 0, got {every!r}")
    if every > 0:
        from nmelab.train.tracking import validate_curvature_config

        validate_curvature_config(config.curvature)


def parse_value(text: str) -> Any:
    """Parse an override value as a Python literal (``0.1``, ``True``, ``(1, 2)``), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def flat_keys(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every key of ``config``, nested ones dotted (``curvature.every_steps``)."""
    keys = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        keys.append(name)
        if isinstance(value, ml_collections.ConfigDict | Mapping):
            keys.extend(flat_keys(value, f"{name}."))
    return keys


def _unknown_key_error(key: str, config: ml_collections.ConfigDict) -> KeyError:
    keys = flat_keys(config)
    near = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(k) for k in near)}?" if near else ""
    return KeyError(f"unknown config key {key!r}{hint} (keys: {', '.join(sorted(keys))})")


def set_value(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """Set the dotted ``key`` of ``config`` to ``value`` in place.

    Sub-keys of :data:`FREE_FORM_KEYS` may be new; every other key must exist.

    Raises:
      KeyError: an unknown key, naming the nearest existing keys.
      TypeError: a value of the wrong type for the key.
    """
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise _unknown_key_error(key, config)
        node = node[part]
        if ".".join(parts[: depth + 1]) in FREE_FORM_KEYS:
            with node.unlocked():
                node[".".join(parts[depth + 1 :])] = value
            return
    last = parts[-1]
    if last not in node:
        raise _unknown_key_error(key, config)
    if key in FREE_FORM_KEYS:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise TypeError(f"config key {key!r} expects a dict, got {value!r}")
        node[last] = ml_collections.ConfigDict(dict(value))
        return
    if isinstance(value, list):
        value = tuple(value)
    current = node[last]
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        node[last] = value
    except TypeError as err:
        raise TypeError(
            f"config key {key!r} expects {type(current).__name__}, got {value!r} "
            f"({type(value).__name__})"
        ) from err


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Iterable[str] | Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """Return a copy of ``config`` with ``key=value`` overrides applied.

    Args:
      config: the base config.
      overrides: strings ``"key=value"`` (values parsed by :func:`parse_value`; nested keys
        dotted, e.g. ``"curvature.every_steps=10"``) or a mapping ``{key: value}``.

    Raises:
      ValueError: a string without ``=``.
      KeyError: an unknown key (the message names the near matches).
      TypeError: a value of the wrong type.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    items: Sequence[tuple[str, Any]]
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides:
            if "=" not in text:
                raise ValueError(f"--set: expected key=value, got {text!r}")
            key, raw = text.split("=", 1)
            items.append((key.strip(), parse_value(raw.strip())))
    for key, value in items:
        set_value(config, key, value)
    return config


def _jsonable(value: Any) -> Any:
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return repr(value)


def config_to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A JSON-ready plain dict of ``config`` (tuples become lists)."""
    return _jsonable(config)


def config_from_dict(values: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Rebuild a config from :func:`config_to_dict` output: the defaults overridden by ``values``."""
    config = default_config()
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping) and name not in FREE_FORM_KEYS:
                walk(value, f"{name}.")
            else:
                flat[name] = value

    walk(values, "")
    return apply_overrides(config, flat)


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = RESUME_IGNORED_KEYS
) -> list[str]:
    """Top-level keys whose JSON values differ between two :func:`config_to_dict` dicts."""
    ignore = set(ignore)
    keys = (set(old) | set(new)) - ignore
    return sorted(
        k
        for k in keys
        if json.dumps(old.get(k), sort_keys=True) != json.dumps(new.get(k), sort_keys=True)
    )
