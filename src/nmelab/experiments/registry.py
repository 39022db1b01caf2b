"""The named experiments, their scales, and the training configs they are built from.

An :class:`Experiment` lists :class:`Point` s: a training or computation task
(:class:`~nmelab.experiments.sweep.RunSpec`) placed on a line of a figure at an x value. The same
task may sit on several lines and in several experiments (the SGD run of a ReLU network is the
ρ = 0 point of both the penalty line of Fig. 2 and the SAM line of Fig. 6); it is run once.

Scales (:data:`SCALES`): ``quick`` (MNIST-1D generated locally, CPU, 3 seeds), ``small``
(5 seeds, extended grids, a residual BN CNN, a second learning rate), ``paper`` (CIFAR-10
WRN-28-10 and ImageNet ResNet-50, data from ``--data-dir``). The quick-scale design follows
``shared/notes/pilot-small-scale.md`` ("What this suggests"); its grids were fixed before the
runs and are not tuned to make a claim appear.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nmelab.experiments.sweep import RunSpec

__all__ = [
    "EXPERIMENT_NAMES",
    "SCALES",
    "Experiment",
    "Point",
    "Scale",
    "get",
    "points_for",
    "tasks_for",
    "exact_experiment",
    "train_runner",
    "training_specs",
]

TRAIN_RUNNER = "nmelab.experiments.registry:train_runner"

EXPERIMENT_NAMES: tuple[str, ...] = (
    "fig1",
    "fig2",
    "fig3",
    "fig4",
    "fig5",
    "fig6",
    "b4",
    "mechanism",
)
"""Every experiment, in report order."""

_MODULES = {
    "fig1": "nmelab.experiments.fig1_landscape",
    "fig2": "nmelab.experiments.fig2_penalty",
    "fig3": "nmelab.experiments.fig3_beta",
    "fig4": "nmelab.experiments.fig4_custom",
    "fig5": "nmelab.experiments.fig5_noise",
    "fig6": "nmelab.experiments.fig6_sam",
    "b4": "nmelab.experiments.b4_pusam",
    "mechanism": "nmelab.experiments.mechanism",
}


@dataclasses.dataclass(frozen=True)
class Scale:
    """A scale of the reproduction.

    Attributes:
      name: ``"quick"``, ``"small"`` or ``"paper"``.
      num_seeds: seeds per grid point (vmapped inside one training run).
      data_dir: the folder of CIFAR-10 / ImageNet (``paper`` only).
    """

    name: str
    num_seeds: int
    data_dir: str | None = None


SCALES: dict[str, Scale] = {
    "quick": Scale("quick", 3),
    "small": Scale("small", 5),
    "paper": Scale("paper", 5),
}


def get_scale(name: str, data_dir: str | None = None, num_seeds: int | None = None) -> Scale:
    """The :class:`Scale` ``name`` with its data folder (and optionally another seed count).

    Raises:
      ValueError: an unknown scale, ``num_seeds < 2`` (no confidence interval), or ``paper``
        without ``data_dir``.
    """
    if name not in SCALES:
        raise ValueError(f"scale: expected one of {', '.join(SCALES)}, got {name!r}")
    scale = SCALES[name]
    if num_seeds is not None:
        if not isinstance(num_seeds, int) or num_seeds < 2:
            raise ValueError(
                f"num_seeds: expected an integer >= 2 (a confidence interval needs 2), got "
                f"{num_seeds!r}"
            )
        scale = dataclasses.replace(scale, num_seeds=num_seeds)
    if name == "paper" and not data_dir:
        raise ValueError(
            "data_dir: the paper scale trains on CIFAR-10 and ImageNet and needs --data-dir DIR "
            "(with DIR/cifar10 and DIR/imagenet)"
        )
    return dataclasses.replace(scale, data_dir=data_dir)


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point of a figure: its tasks (together they hold every seed of the point).

    Attributes:
      line: the legend entry, e.g. ``"penalty, ReLU"``.
      x: the x value (ρ, β or σ²).
      specs: the tasks; one task with the seeds vmapped inside it, or one task per seed (see
        :func:`training_specs`). A single :class:`RunSpec` is accepted and wrapped.
      panel: the panel of a multi-panel figure (``""`` for one panel).
    """

    line: str
    x: float
    specs: tuple[RunSpec, ...]
    panel: str = ""

    def __post_init__(self) -> None:
        specs = (self.specs,) if isinstance(self.specs, RunSpec) else tuple(self.specs)
        if not specs or not all(isinstance(s, RunSpec) for s in specs):
            raise TypeError(f"specs: expected RunSpec objects, got {self.specs!r}")
        object.__setattr__(self, "specs", specs)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named experiment.

    Attributes:
      name: e.g. ``"fig2"``.
      title: one line, e.g. ``"Fig. 2: accuracy vs ρ, p = 1 gradient penalty, ReLU vs GELU"``.
      section: where the paper makes the claim, e.g. ``"§4.1, Fig. 2"``.
      points: ``points(scale) -> list[Point]``.
      describe: ``describe(scale) -> str``: the setup in prose (model, data, grid, seeds) for
        the report.
      claims: ``claims(table, scale, root) -> list[Claim]`` from the points table
        (:func:`nmelab.experiments.claims.points_table`); ``root`` is the sweep root, for
        experiments that read arrays from their work directories.
      plot: ``plot(table, out_dir, scale, root) -> list[Path]``: the figure files.
    """

    name: str
    title: str
    section: str
    points: Callable[[Scale], list[Point]]
    describe: Callable[[Scale], str]
    claims: Callable[..., list[Any]]
    plot: Callable[..., list[Path]]


def get(name: str) -> Experiment:
    """The experiment ``name`` (one of :data:`EXPERIMENT_NAMES`).

    Raises:
      ValueError: an unknown name (the message lists the choices).
    """
    if name not in _MODULES:
        raise ValueError(f"experiment: expected one of {', '.join(EXPERIMENT_NAMES)}, got {name!r}")
    return importlib.import_module(_MODULES[name]).EXPERIMENT


def points_for(names: Sequence[str], scale: Scale) -> dict[str, list[Point]]:
    """``{name: points}`` for the named experiments at ``scale``."""
    return {name: get(name).points(scale) for name in names}


def tasks_for(names: Sequence[str], scale: Scale) -> list[RunSpec]:
    """The de-duplicated tasks of the named experiments at ``scale``."""
    unique: dict[str, RunSpec] = {}
    for points in points_for(names, scale).values():
        for point in points:
            for spec in point.specs:
                unique.setdefault(spec.digest, spec)
    return list(unique.values())


def exact_experiment(
    *,
    name: str,
    title: str,
    section: str,
    runner: str,
    config_fn: Callable[[str], dict[str, Any]],
    cost: float,
    describe: Callable[[Scale], str],
    claims_fn: Callable[[Mapping[str, Any]], list[Any]],
    figure_fn: Callable[..., list[Path]],
    load_fn: Callable[[Path], Mapping[str, Any]],
) -> Experiment:
    """An :class:`Experiment` made of one computation task (Fig. 1, B.4): no training, no seeds.

    Args:
      name: the experiment name (also the task name and the figure's file name).
      title: the report title.
      section: where the paper makes the claims.
      runner: the task's runner ``"module:function"``.
      config_fn: ``scale name -> config``.
      cost: the task's rough cost in seconds.
      describe: ``scale -> setup text``.
      claims_fn: ``summary -> claims`` from the task's stored summary.
      figure_fn: ``figure_fn(arrays, summary, out_base) -> paths``.
      load_fn: ``workdir -> arrays`` the runner saved.
    """
    from nmelab.experiments.sweep import read_result, run_dir

    def spec(scale: Scale) -> RunSpec:
        return RunSpec(runner, config_fn(scale.name), name, cost=cost)

    def claims(table: Any, scale: Scale, root: Any) -> list[Any]:
        from nmelab.experiments import claims as C

        result = read_result(run_dir(root, spec(scale)))
        if result is None:
            return [C.Claim(name, section, f"{title}: not computed yet.", "-", C.NAN_INTERVAL, +1,
                            1.0, notes=["missing"])]  # fmt: skip
        return claims_fn(result["summary"])

    def plot(table: Any, out_dir: Any, scale: Scale, root: Any) -> list[Path]:
        workdir = run_dir(root, spec(scale))
        result = read_result(workdir)
        if result is None:
            return []
        return figure_fn(load_fn(workdir), result["summary"], Path(out_dir) / name)

    return Experiment(name=name, title=title, section=section,
                      points=lambda scale: [Point(name, 0.0, spec(scale))], describe=describe,
                      claims=claims, plot=plot)  # fmt: skip


# --------------------------------------------------------------------------------------------
# training configs
# --------------------------------------------------------------------------------------------

# Rough seconds per seed (one worker, one thread, 2-core CPU; measured in the quick run under
# load and scaled), for scheduling (longest first) and the time estimate only.
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
    "rescnn1d": {"sgd": 40.0, "sam": 75.0, "gradient_penalty": 110.0},
}
_TRACKING_COST = 3.0
"""Cost multiplier of a run with curvature tracking (the mechanism runs)."""


def base_config(recipe: str, scale: Scale) -> dict[str, Any]:
    """The training config (a plain dict of every trainer key) of a recipe at a scale.

    Recipes:
      ``mlp``: MNIST-1D, MLP 40-256-256-10, SGD momentum 0.9, lr 0.2, cosine, 60 epochs, batch
      128 (the pilot's MLP: 71/72 % test, 100 % train).
      ``cnn_bn``: MNIST-1D, 1D CNN with BatchNorm, 3 conv layers of 32 channels, lr 0.1, 20 epochs
      (the pilot's CNN-BN: 96.8/96.6 %). At ``small`` scale the residual BN CNN ``rescnn1d``
      (stem + 3 residual blocks of 64 channels, weight decay 5e-4) replaces it.
      ``cnn1d_bn``: the quick scale's CNN-BN at every scale (30 epochs beyond quick).
      ``cifar10``: WRN-28-10 on CIFAR-10 as Zagoruyko & Komodakis (lr 0.1, batch 128, Nesterov
      momentum 0.9, weight decay 5e-4, 200 epochs, crop + flip) with cosine decay (paper §3).
      ``imagenet``: ResNet-50 as Goyal et al. (batch 1024, lr 0.4 = 0.1 × 1024/256, 5 warmup
      epochs, weight decay 1e-4, momentum 0.9) with cosine decay over 300 epochs (paper §3).

    Raises:
      ValueError: an unknown recipe.
    """
    from nmelab.train import config as config_lib

    overrides: dict[str, Any] = {
        "num_seeds": scale.num_seeds,
        "seed": 0,
        "progress": False,
        "eval_every_epochs": 0,
        "final_train_eval": True,
        "checkpoint_every_steps": 0,
        "log_every_steps": 100,
    }
    mnist1d_kwargs = {} if scale.name == "quick" else {"num_train": 4000, "num_test": 10000}
    if recipe == "mlp":
        overrides.update(
            dataset="mnist1d",
            dataset_kwargs=mnist1d_kwargs,
            model="mlp",
            learning_rate=0.2,
            num_epochs=60.0,
            batch_size=128,
            momentum=0.9,
            lr_schedule="cosine",
        )
    elif recipe in ("cnn_bn", "cnn1d_bn"):
        if scale.name == "quick" or recipe == "cnn1d_bn":
            overrides.update(model="cnn1d_bn", weight_decay=0.0)
        else:
            overrides.update(model="rescnn1d", weight_decay=5e-4, weight_decay_mask="no_bn_and_bias")
        overrides.update(
            dataset="mnist1d",
            dataset_kwargs=mnist1d_kwargs,
            learning_rate=0.1,
            # quick: 20 epochs (the pilot used 30) to fit the 15-minute budget; chosen for cost
            # before any claim was measured at 20 epochs. SGD still reaches ~98 % test accuracy.
            num_epochs=20.0 if scale.name == "quick" else 30.0,
            batch_size=128,
            momentum=0.9,
            lr_schedule="cosine",
        )
    elif recipe == "cifar10":
        overrides.update(
            dataset="cifar10",
            data_dir=_sub(scale.data_dir, "cifar10"),
            model="wrn_28_10",
            learning_rate=0.1,
            batch_size=128,
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
            num_epochs=200.0,
            augment=True,
            lr_schedule="cosine",
            eval_batch_size=500,
            checkpoint_every_steps=2000,
            log_every_steps=200,
        )
    elif recipe == "imagenet":
        overrides.update(
            dataset="imagenet",
            data_dir=_sub(scale.data_dir, "imagenet"),
            model="resnet50",
            learning_rate=0.4,
            batch_size=1024,
            warmup_epochs=5.0,
            momentum=0.9,
            weight_decay=1e-4,
            num_epochs=300.0,
            augment=True,
            lr_schedule="cosine",
            eval_batch_size=500,
            checkpoint_every_steps=2000,
            log_every_steps=200,
            num_workers=8,
            final_train_eval=False,
        )
    else:
        raise ValueError(
            f"recipe: expected mlp, cnn_bn, cnn1d_bn, cifar10 or imagenet, got {recipe!r}"
        )
    config = config_lib.apply_overrides(config_lib.default_config(), overrides)
    return {**config_lib.config_to_dict(config), "_recipe": recipe}


def _sub(data_dir: str | None, name: str) -> str | None:
    return None if data_dir is None else str(Path(data_dir) / name)


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
    params = "".join(parts)
    return f"{config['model']}-{act}-{method}{params}".replace("/", "_")


SEED_PACKING: dict[str, str] = {
    "mlp": "vmap",
    "cnn_bn": "separate",
    "cnn1d_bn": "separate",
    "cifar10": "separate",
    "imagenet": "separate",
}
"""How each recipe packs its seeds into tasks.

``"vmap"``: one task trains every seed at once (the trainer's ``num_seeds``, vmapped, with the
training set on the device and a device-side loop). ``"separate"``: one task per seed
(``num_seeds = 1``, host-fed batches, one jitted call per step).

Measured on the 2-core CPU (``benchmarks``-style, side by side in one process): for the MLP the
vmapped device loop is fast. For the 1D CNN two things invert it: XLA:CPU runs a convolution
inside a rolled loop (``fori_loop``/``scan``, which the device loop is) about 30-60× slower than
the same step called from Python (227 ms vs 3.9 ms per CNN-BN step), and vmapping a convolution
over seeds turns it into a grouped convolution that costs more than running the seeds one after
the other (3 seeds: 40 ms vs 3 × 3.9 ms). So CNN seeds run as separate host-fed tasks, which
share compiled code through the persistent compilation cache (the regularizer's ρ/σ are
arguments, not constants). Large image models run one seed per task anyway (memory)."""


def training_specs(
    base: Mapping[str, Any],
    *,
    activation: str,
    activation_params: Mapping[str, float] | None = None,
    regularizer: str = "none",
    regularizer_params: Mapping[str, Any] | None = None,
    packing: str | None = None,
    **overrides: Any,
) -> tuple[RunSpec, ...]:
    """The training tasks of one grid point, covering every seed of ``base["num_seeds"]``.

    ``base`` with the activation, regularizer and other keys replaced.

    Args:
      base: a :func:`base_config`.
      activation: the activation name.
      activation_params: its parameters (e.g. ``{"beta": 3.0}``).
      regularizer: the regularizer name (``"none"``: SGD).
      regularizer_params: its hyperparameters.
      packing: ``"vmap"`` or ``"separate"`` (default: :data:`SEED_PACKING` of the recipe).
      **overrides: other config keys.

    Returns:
      One task (``"vmap"``) or one per seed (``"separate"``, seeds ``0 … S−1``).
    """
    config = dict(base)
    config.update(
        activation=activation,
        activation_params=dict(activation_params or {}),
        regularizer=regularizer,
        regularizer_params=dict(regularizer_params or {}),
        **overrides,
    )
    packing = packing or SEED_PACKING.get(str(config.pop("_recipe", "")), "vmap")
    config.pop("_recipe", None)
    method = "sgd" if regularizer == "none" else regularizer
    per_seed = _COST.get(str(config["model"]), {}).get(method, 10.0)
    if (config.get("curvature") or {}).get("every_steps", 0):
        per_seed *= _TRACKING_COST
    num_seeds = int(config["num_seeds"])
    if packing == "vmap":
        return (RunSpec(TRAIN_RUNNER, config, run_name(config), cost=per_seed * num_seeds),)
    if packing != "separate":
        raise ValueError(f"packing: expected 'vmap' or 'separate', got {packing!r}")
    specs = []
    for seed in range(num_seeds):
        one = {**config, "num_seeds": 1, "seed": int(config["seed"]) + seed}
        if one["dataset"] in ("mnist1d", "digits", "synthetic"):
            one["data_on_device"] = False
        specs.append(RunSpec(TRAIN_RUNNER, one, f"{run_name(one)}-s{one['seed']}", cost=per_seed))
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


# --------------------------------------------------------------------------------------------
# labels shared by the figures
# --------------------------------------------------------------------------------------------

ACTIVATION_LABELS = {
    "relu": "ReLU",
    "gelu": "GELU",
    "beta_gelu": "β-GELU",
    "augmented_relu": "augmented ReLU",
    "diminished_gelu": "diminished GELU",
}

METHOD_LABELS = {
    "sgd": "SGD",
    "gradient_penalty": "penalty (p=1)",
    "sam": "SAM",
    "weight_noise": "weight noise",
    "hessian_trace": "Hessian-trace penalty",
    "gn_trace": "GN-trace penalty",
    "nme_trace": "NME-trace penalty",
}


def activation_label(name: str, params: Mapping[str, float] | None = None) -> str:
    """``"augmented ReLU (β=1)"``-style label."""
    label = ACTIVATION_LABELS.get(name, name)
    if params and "beta" in params:
        label += f" (β={_fmt(float(params['beta']))})"
    return label
