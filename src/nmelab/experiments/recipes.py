"""Training recipes from ``configs/`` (the one recipe source) and the training tasks built on them.

A recipe is a config file of the repository's ``configs/`` folder and an optional argument, the
big_vision way: ``configs/mnist1d_mlp.py`` with ``get_config("scale=quick")``. The experiments
name a recipe per scale (:class:`Recipe`); :func:`load` returns its config as a plain dict, the
sweep's few run-management keys (:data:`SWEEP_OVERRIDES`) and the data folder set on top, and
:func:`training_specs` turns one grid point into sweep tasks. The report's setup text is
generated from the same config (:func:`setup_text`), so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nmelab.experiments.base import Scale
from nmelab.experiments.sweep import RunSpec

__all__ = [
    "CONFIGS_DIR",
    "SWEEP_OVERRIDES",
    "TRAIN_RUNNER",
    "Recipe",
    "load",
    "recipe_dict",
    "run_name",
    "setup_text",
    "train_runner",
    "training_specs",
    "validate_training",
]

TRAIN_RUNNER = "nmelab.experiments.recipes:train_runner"
TRAIN_VALIDATOR = "nmelab.experiments.recipes:validate_training"

CONFIGS_DIR = Path(__file__).resolve().parents[3] / "configs"
"""The repository's ``configs/`` folder (a source checkout; ``pip install -e .`` keeps it)."""

SWEEP_OVERRIDES: dict[str, Any] = {"seed": 0, "progress": False}
"""Run-management keys every sweep task sets on top of its recipe (plus ``num_seeds``)."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A config file of ``configs/`` and the argument its ``get_config`` is called with.

    Attributes:
      file: the file name, e.g. ``"mnist1d_mlp.py"``.
      arg: the argument, e.g. ``"scale=quick"``; ``None`` calls ``get_config()``.
    """

    file: str
    arg: str | None = None

    def __str__(self) -> str:
        return f"configs/{self.file}" + (f":{self.arg}" if self.arg else "")

    @classmethod
    def parse(cls, text: str) -> Recipe:
        """The inverse of ``str(recipe)``: ``"configs/FILE[:ARG]"``."""
        path, _, arg = text.partition(":")
        return cls(path.removeprefix("configs/"), arg or None)


@functools.cache
def _recipe_dict(recipe: Recipe) -> dict[str, Any]:
    from nmelab.train import config as config_lib

    path = CONFIGS_DIR / recipe.file
    if not path.is_file():
        raise FileNotFoundError(
            f"recipe: no config file {str(path)!r} (the experiments read the repository's "
            "configs/ folder: run from a source checkout)"
        )
    spec = importlib.util.spec_from_file_location(f"nmelab_recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config() if recipe.arg is None else module.get_config(recipe.arg)
    return config_lib.config_to_dict(config)


def load(recipe: Recipe, scale: Scale) -> dict[str, Any]:
    """The recipe's config as a plain dict, with the sweep's keys set on top.

    Those are :data:`SWEEP_OVERRIDES`, the scale's seed count and, for CIFAR-10 / ImageNet,
    ``data_dir = scale.data_dir/<dataset>``.
    """
    config = {**_recipe_dict(recipe), **SWEEP_OVERRIDES, "num_seeds": scale.num_seeds}
    if config["dataset"] in ("cifar10", "imagenet") and scale.data_dir is not None:
        config["data_dir"] = str(Path(scale.data_dir) / config["dataset"])
    return config


def recipe_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe's own config (no sweep keys), for showing a task's overrides."""
    return dict(_recipe_dict(recipe))


_DATASET_LABELS = {
    "mnist1d": "MNIST-1D",
    "cifar10": "CIFAR-10",
    "imagenet": "ImageNet",
    "digits": "digits",
}


def setup_text(config: Mapping[str, Any]) -> str:
    """The training setup in words, e.g. ``"MNIST-1D (4000 train / 1000 test), mlp, SGD ..."``."""
    data = _DATASET_LABELS.get(str(config["dataset"]), str(config["dataset"]))
    kwargs = config.get("dataset_kwargs") or {}
    if "num_train" in kwargs or "num_test" in kwargs:
        data += f" ({kwargs.get('num_train', 4000)} train / {kwargs.get('num_test', 1000)} test)"
    momentum = f", momentum {config['momentum']:g}" + (
        " Nesterov" if config.get("nesterov") else ""
    )
    decay = f", weight decay {config['weight_decay']:g}" if config.get("weight_decay") else ""
    warmup = f", {config['warmup_epochs']:g} warmup epochs" if config.get("warmup_epochs") else ""
    augment = ", augmentation" if config.get("augment") else ""
    return (
        f"{data}, model {config['model']}, SGD{momentum}, lr {config['learning_rate']:g} "
        f"({config['lr_schedule']}{warmup}), batch {config['batch_size']}, "
        f"{config['num_epochs']:g} epochs{decay}{augment}"
    )


def _fmt(value: float) -> str:
    return f"{value:g}"


def run_name(config: Mapping[str, Any]) -> str:
    """A readable run name from the config, e.g. ``mlp-beta_gelu3-gradient_penalty-rho0.3``."""
    act = str(config["activation"])
    act_params = config.get("activation_params") or {}
    if "beta" in act_params:
        act += _fmt(float(act_params["beta"]))
    reg = str(config.get("regularizer", "none"))
    method = "sgd" if reg == "none" else reg
    parts = []
    for key, value in sorted((config.get("regularizer_params") or {}).items()):
        if key == "sigma":  # the grids are in σ², so name the run by σ²
            parts.append(f"-sigma2_{_fmt(round(float(value) ** 2, 12))}")
        else:
            parts.append(f"-{key}{_fmt(value) if isinstance(value, int | float) else value}")
    tracked = "-tracked" if (config.get("curvature") or {}).get("every_steps", 0) else ""
    return f"{config['model']}-{act}-{method}{''.join(parts)}{tracked}".replace("/", "_")


# Rough seconds per seed at _REFERENCE_EPOCHS (MNIST-1D models: one worker, one thread of a
# 2-core CPU, measured in a quick run under load and scaled; WRN-28-10 / ResNet-50: GPU-hours as
# the paper's setups suggest, not measured), for scheduling (longest first) and estimates only.
_COST = {
    "mlp": {
        "sgd": 5.0,
        "sam": 6.0,
        "gradient_penalty": 8.0,
        "weight_noise": 9.0,
        "gn_trace": 7.0,
        "hessian_trace": 25.0,
        "nme_trace": 18.0,
    },
    "cnn1d_bn": {"sgd": 8.0, "sam": 15.0, "gradient_penalty": 16.0},
    "rescnn1d": {"sgd": 40.0, "sam": 75.0, "gradient_penalty": 85.0},  # 2,000 examples
    "wrn_28_10": {"sgd": 8 * 3600.0, "sam": 16 * 3600.0, "gradient_penalty": 16 * 3600.0},
    "resnet50": {"sgd": 72 * 3600.0, "sam": 144 * 3600.0, "gradient_penalty": 144 * 3600.0},
}
_REFERENCE_EPOCHS = {"mlp": 60, "cnn1d_bn": 20, "rescnn1d": 30, "wrn_28_10": 200, "resnet50": 300}
"""The epochs the costs above were measured at (a run's cost scales with its epochs)."""
_TRACKING_COST = 3.0
"""Cost multiplier of a run with curvature tracking (the mechanism runs)."""

_VMAPPED_MODELS = frozenset({"mlp"})
"""Models whose seeds train vmapped in one task; every other model runs one task per seed.

Measured on the 2-core CPU (side by side in one process): for the MLP the vmapped device loop
is fast. For the 1D CNN two things invert it: XLA:CPU runs a convolution inside a rolled loop
(``fori_loop``/``scan``, which the device loop is) about 30-60× slower than the same step called
from Python (227 ms vs 3.9 ms per CNN-BN step), and vmapping a convolution over seeds turns it
into a grouped convolution that costs more than running the seeds one after the other (3 seeds:
40 ms vs 3 × 3.9 ms). So CNN seeds run as separate host-fed tasks, which share compiled code
through the persistent compilation cache (ρ/σ are arguments, not constants). Large image models
run one seed per task anyway (memory)."""


def training_specs(
    base: Mapping[str, Any],
    recipe: Recipe,
    *,
    activation: str,
    activation_params: Mapping[str, float] | None = None,
    regularizer: str = "none",
    regularizer_params: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> tuple[RunSpec, ...]:
    """The training tasks of one grid point, covering every seed of ``base["num_seeds"]``.

    Args:
      base: :func:`load` of ``recipe``.
      recipe: the recipe ``base`` came from (shown by ``--plan``; not part of the identity).
      activation: the activation name.
      activation_params: its parameters (e.g. ``{"beta": 3.0}``).
      regularizer: the regularizer name (``"none"``: SGD).
      regularizer_params: its hyperparameters.
      **overrides: other config keys.

    Returns:
      One task with every seed vmapped (MLPs) or one task per seed (seeds ``0 … S−1``).
    """
    config = dict(base)
    config.update(
        activation=activation,
        activation_params=dict(activation_params or {}),
        regularizer=regularizer,
        regularizer_params=dict(regularizer_params or {}),
        **overrides,
    )
    method = "sgd" if regularizer == "none" else regularizer
    model = str(config["model"])
    per_seed = _COST.get(model, {}).get(method, 10.0)
    per_seed *= float(config["num_epochs"]) / _REFERENCE_EPOCHS.get(model, config["num_epochs"])
    if (config.get("curvature") or {}).get("every_steps", 0):
        per_seed *= _TRACKING_COST
    num_seeds = int(config["num_seeds"])
    common = {"runner": TRAIN_RUNNER, "validator": TRAIN_VALIDATOR, "recipe": str(recipe)}
    if config["model"] in _VMAPPED_MODELS:
        return (RunSpec(config=config, name=run_name(config), cost=per_seed * num_seeds, **common),)
    specs = []
    for seed in range(num_seeds):
        one = {**config, "num_seeds": 1, "seed": int(config["seed"]) + seed}
        if one["dataset"] in ("mnist1d", "digits", "synthetic"):
            one["data_on_device"] = False
        specs.append(
            RunSpec(config=one, name=f"{run_name(one)}-s{one['seed']}", cost=per_seed, **common)
        )
    return tuple(specs)


def train_runner(config: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Sweep runner of a training task: :func:`nmelab.train.train_and_evaluate`.

    Raises:
      RuntimeError: the trainer stopped without finishing (no summary).
    """
    from nmelab.train import train_and_evaluate
    from nmelab.train.config import config_from_dict

    summary = train_and_evaluate(config_from_dict(config), workdir)
    if summary.get("stopped"):
        raise RuntimeError(f"training stopped at step {summary.get('step')} without a summary")
    return summary


SEED_STATUSES = frozenset({"ok", "diverged", "collapsed"})


def validate_training(workdir: str, summary: Mapping[str, Any]) -> None:
    """Check a stored training summary: per-seed lists, known statuses, accuracies in [0, 1].

    An accuracy may be ``null`` where the trainer had none (a diverged seed).

    Raises:
      ValueError: naming the field and what was wrong.
    """
    seeds = summary.get("seeds")
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"summary.seeds: expected a non-empty list, got {seeds!r}")
    for key in ("status", "test_accuracy"):
        values = summary.get(key)
        if not isinstance(values, list) or len(values) != len(seeds):
            raise ValueError(f"summary.{key}: expected a list of {len(seeds)}, got {values!r}")
    bad = [s for s in summary["status"] if s not in SEED_STATUSES]
    if bad:
        raise ValueError(f"summary.status: expected {sorted(SEED_STATUSES)}, got {bad}")
    for acc in summary["test_accuracy"]:
        if acc is not None and not (isinstance(acc, int | float) and 0 <= acc <= 1):
            raise ValueError(f"summary.test_accuracy: expected fractions in [0, 1], got {acc!r}")
