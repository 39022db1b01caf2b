"""The training loop: :func:`train_and_evaluate` runs one config in one workdir, resumably.

Workdir layout::

    config.json       the config (written at the start)
    metrics.jsonl     one record per log step ("split": "train"), per evaluation ("test") and the
                      final evaluation ("final": true); metric values are per-seed lists
    curvature.jsonl   curvature tracking records (when ``curvature.every_steps > 0``)
    checkpoints/      Orbax checkpoints (every ``checkpoint_every_steps`` and at the end)
    summary.json      written last: the run is finished when it exists

Resume. If ``summary.json`` exists the run is finished and its summary is returned. Otherwise, if a
checkpoint exists, the state, the metric sums in flight and the elapsed time are restored, the logs
are cut back to the checkpoint's step, and training continues. Batches, noise and dropout are pure
functions of ``(key, step)``, so on a deterministic backend (CPU) the resumed run equals the
uninterrupted one bitwise. Resuming with a different config raises (keys in
:data:`~nmelab.train.config.RESUME_IGNORED_KEYS` may change).

Per-seed outcome (``summary["status"]``):

* ``"diverged"`` - a step produced a NaN or inf loss or parameter; the seed is frozen at its last
  finite state and ``summary["diverged_step"]`` holds that step (0-based: the failing update was the
  ``(step + 1)``-th). Its final metrics are ``null``. The run stops when every seed has diverged.
* ``"collapsed"`` - a constant predictor: test accuracy ``<= 1/K + 0.02`` and test loss
  ``>= 0.95 ln K`` (the dominant failure of strong sharpness regularization at CPU scale).
* ``"ok"`` otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from nmelab import parallel
from nmelab.train import config as config_lib
from nmelab.train import metrics_io
from nmelab.train.checkpoint import Checkpointer
from nmelab.train.sources import ArraySource, FolderSource, make_source
from nmelab.train.state import TrainState, accumulator, seed_keys
from nmelab.train.step import Program, ProgramSpec, make_program, model_functions

STATUSES = ("ok", "diverged", "collapsed")

IMAGE_FOLDER_KEYS = ("image_size", "resize_size")
"""``dataset_kwargs`` read by the ImageNet batch loader (crop side, evaluation resize)."""


# ------------------------------------------------------------------------------------------------
# setup


def _freeze(value: Any) -> Any:
    if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _positive_int(config: ml_collections.ConfigDict, key: str, minimum: int = 1) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"config.{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Check the keys the loop relies on; errors name the key, the expectation and the value.

    Raises:
      ValueError: a value out of range.
    """
    _positive_int(config, "batch_size")
    _positive_int(config, "eval_batch_size")
    _positive_int(config, "num_seeds")
    _positive_int(config, "log_every_steps")
    _positive_int(config, "checkpoint_every_steps", 0)
    _positive_int(config, "eval_every_epochs", 0)
    _positive_int(config, "max_checkpoints")
    if not config.num_epochs > 0:
        raise ValueError(f"config.num_epochs: expected > 0, got {config.num_epochs!r}")
    if not config.warmup_epochs >= 0:
        raise ValueError(f"config.warmup_epochs: expected >= 0, got {config.warmup_epochs!r}")
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
    if config.stop_after_steps is not None and config.stop_after_steps < 1:
        raise ValueError(
            f"config.stop_after_steps: expected None or >= 1, got {config.stop_after_steps!r}"
        )


def load_dataset(config: ml_collections.ConfigDict) -> Any:
    """Load ``config.dataset`` with ``dataset_kwargs`` (and ``data_dir`` for cifar10/imagenet).

    Raises:
      ValueError: cifar10/imagenet without ``data_dir``.
    """
    from nmelab import data as nmedata

    kwargs = dict(config.dataset_kwargs.to_dict())
    for key in IMAGE_FOLDER_KEYS:  # options of the image-folder loader, not of the listing
        kwargs.pop(key, None)
    if config.dataset in ("cifar10", "imagenet"):
        if not config.data_dir:
            raise ValueError(
                f"config.data_dir: dataset {config.dataset!r} is read from a local folder; "
                f"pass --set data_dir=/path/to/{config.dataset} (got None)"
            )
        kwargs["data_dir"] = config.data_dir
    return nmedata.get(config.dataset, **kwargs)


@dataclasses.dataclass
class Setup:
    """Everything a run needs, built from its config by :func:`setup`.

    Attributes:
      config: the config.
      source: the data source.
      program: the compiled functions.
      regularizer: the regularizer pytree.
      steps_per_epoch: optimizer steps per epoch.
      total_steps: optimizer steps of the run.
      num_params: trainable parameters of one seed's model.
    """

    config: ml_collections.ConfigDict
    source: ArraySource | FolderSource
    program: Program
    regularizer: Any
    steps_per_epoch: int
    total_steps: int
    num_params: int


SEED_BATCHING = ("auto", "vmap", "unroll")


def resolve_seed_batching(mode: str, param_shapes: Any) -> str:
    """``"vmap"`` or ``"unroll"`` for ``config.seed_batching``; ``"auto"`` decides by model.

    ``"auto"`` unrolls the seeds of a convolutional model (a parameter of rank >= 3) on the CPU
    backend and vmaps otherwise: ``vmap`` turns a convolution with per-seed kernels into a grouped
    convolution, which XLA's CPU backend runs 2-3 times slower than the seeds one after another
    (1D CNNs on MNIST-1D, 3 seeds, measured here), while an MLP gains about 25 % from ``vmap``.

    Raises:
      ValueError: an unknown mode.
    """
    if mode not in SEED_BATCHING:
        raise ValueError(f"config.seed_batching: expected one of {SEED_BATCHING}, got {mode!r}")
    if mode != "auto":
        return mode
    convolutional = any(len(leaf.shape) >= 3 for leaf in jax.tree.leaves(param_shapes))
    return "unroll" if convolutional and jax.default_backend() == "cpu" else "vmap"


def setup(config: ml_collections.ConfigDict, dataset: Any = None) -> Setup:
    """Load the data, build (or fetch from cache) the program and the regularizer of ``config``.

    Args:
      config: a training config (:func:`nmelab.train.default_config` keys).
      dataset: an already loaded dataset to use instead of loading ``config.dataset``.

    Raises:
      ValueError: an invalid config, e.g. ``num_seeds > 1`` with host-fed data, or a batch larger
        than the training set.
    """
    from nmelab import models, regularizers

    validate_config(config)
    dataset = load_dataset(config) if dataset is None else dataset
    source = make_source(
        dataset,
        config.data_on_device,
        image_size=int(config.dataset_kwargs.get("image_size", 224)),
        num_workers=config.num_workers,
        resize_size=config.dataset_kwargs.get("resize_size"),
    )
    if config.num_seeds > 1 and not source.on_device:
        raise ValueError(
            f"config.num_seeds: {config.num_seeds} seeds are trained side by side in one "
            f"program, which needs the training set on the device; dataset {source.name!r} is "
            "host-fed "
            "(set num_seeds=1, or data_on_device=True for an in-memory dataset that fits)"
        )
    if config.batch_size > source.num_train:
        raise ValueError(
            f"config.batch_size: expected <= the {source.num_train} training examples, "
            f"got {config.batch_size}"
        )
    steps_per_epoch = source.num_train // config.batch_size
    total_steps = max(1, round(config.num_epochs * steps_per_epoch))
    warmup_steps = min(total_steps, round(config.warmup_epochs * steps_per_epoch))
    model_kwargs = dict(config.model_kwargs.to_dict())
    if model_kwargs.pop("num_classes", source.num_classes) != source.num_classes:
        raise ValueError(
            f"config.model_kwargs.num_classes: the dataset {source.name!r} has "
            f"{source.num_classes} classes, got {config.model_kwargs.num_classes}"
        )
    model_kwargs.setdefault("activation", config.activation)
    activation_params = config.activation_params.to_dict()
    if activation_params:
        model_kwargs.setdefault("activation_params", activation_params)
    functions = model_functions(
        config.model, _freeze(model_kwargs), source.num_classes, source.input_shape, config.loss
    )
    param_shapes = jax.eval_shape(functions.init_seed, jax.ShapeDtypeStruct((2,), jnp.uint32))[0]
    spec = ProgramSpec(
        model=config.model,
        model_kwargs=_freeze(model_kwargs),
        num_classes=source.num_classes,
        input_shape=source.input_shape,
        loss=config.loss,
        learning_rate=float(config.learning_rate),
        lr_schedule=config.lr_schedule,
        warmup_steps=int(warmup_steps),
        total_steps=int(total_steps),
        momentum=float(config.momentum),
        nesterov=bool(config.nesterov),
        weight_decay=float(config.weight_decay),
        weight_decay_mask=config.weight_decay_mask,
        batch_size=int(config.batch_size),
        eval_batch_size=int(config.eval_batch_size),
        steps_per_epoch=int(steps_per_epoch),
        num_train=int(source.num_train),
        num_test=int(source.num_test),
        augment=bool(config.augment) and source.augmentable,
        seed_batching=resolve_seed_batching(config.seed_batching, param_shapes),
    )
    program = make_program(spec)
    regularizer_params = config.regularizer_params.to_dict()
    if config.sam_decay_in_loss and "weight_decay" in regularizers.hyperparameters(
        config.regularizer
    ):  # SAM/USAM perturb L + (λ/2)‖m ⊙ θ‖² with the optimizer's λ and mask (google-research/sam)
        regularizer_params["weight_decay"] = float(config.weight_decay)
        regularizer_params["weight_decay_mask"] = config.weight_decay_mask
    regularizer = regularizers.get(config.regularizer, **regularizer_params)
    num_params = models.param_count(param_shapes)
    return Setup(config, source, program, regularizer, steps_per_epoch, total_steps, num_params)


def init_state(run: Setup) -> TrainState:
    """The initial state of every seed: ``seed + i`` initialises seed ``i`` (params, data, noise)."""
    return run.program.init(seed_keys(run.config.seed, run.config.num_seeds))


def abstract_state(run: Setup) -> TrainState:
    """Shapes and dtypes of :func:`init_state` (``jax.ShapeDtypeStruct`` leaves), computing nothing."""
    return run.program.abstract_init(run.config.num_seeds)


# ------------------------------------------------------------------------------------------------
# evaluation and outcomes


def evaluate(run: Setup, state: TrainState, split: str) -> dict[str, np.ndarray]:
    """Mean loss and accuracy of every seed on the ``"train"`` or ``"test"`` split, in eval mode.

    Batches of :meth:`~nmelab.train.step.Program.eval_batch_size` examples (the last one padded and
    masked), so both splits share one compiled evaluation step.
    """
    source, program = run.source, run.program
    size = program.eval_batch_size
    sums, count = None, 0
    for xb, yb in source.eval_batches(split, size):
        num = len(yb)
        mask = np.arange(size) < num
        if num < size:
            xb = np.concatenate([xb, np.zeros((size - num, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((size - num,), yb.dtype)])
        part = np.asarray(program.eval_batch(state.params, state.batch_stats, xb, yb, mask))
        sums = part.astype(np.float64) if sums is None else sums + part
        count += num
    return {"loss": sums[:, 0] / count, "accuracy": sums[:, 1] / count}


def classify(
    test_loss: float | None, test_accuracy: float | None, num_classes: int, diverged_step: int
) -> str:
    """Outcome of one seed: ``"diverged"``, ``"collapsed"`` (a constant predictor) or ``"ok"``.

    Collapsed means test accuracy ``<= 1/K + 0.02`` *and* test loss ``>= 0.95 ln K``: the loss of
    the uniform prediction is ``ln K``, and a model that learned anything beats both bounds.
    """
    if diverged_step >= 0:
        return "diverged"
    if test_loss is None or test_accuracy is None or not np.isfinite(test_loss):
        return "diverged"
    chance = 1.0 / num_classes
    if test_accuracy <= chance + 0.02 and test_loss >= 0.95 * math.log(num_classes):
        return "collapsed"
    return "ok"


# ------------------------------------------------------------------------------------------------
# progress display


class _Progress:
    """A rich progress bar (loss, accuracy, examples/s), or nothing when disabled / not a TTY."""

    def __init__(self, enabled: bool, total: int, start: int, description: str):
        self.bar = None
        if not (enabled and sys.stderr.isatty()):
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  {task.fields[speed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.bar.add_task(
            description, total=total, completed=start, loss="-", acc="-", speed=""
        )
        self.bar.start()

    def update(self, step: int, loss: Any = None, acc: Any = None, speed: float | None = None):
        if self.bar is None:
            return
        fields = {}
        if loss is not None:
            fields["loss"] = f"{np.nanmean(loss):.4f}" if np.isfinite(loss).any() else "nan"
        if acc is not None:
            fields["acc"] = f"{np.nanmean(acc):.3f}" if np.isfinite(acc).any() else "nan"
        if speed is not None:
            fields["speed"] = f"{speed:,.0f} ex/s"
        self.bar.update(self.task, completed=step, **fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ------------------------------------------------------------------------------------------------
# the loop


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


def _is_multiple(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


class _Loop:
    """One run of :func:`train_and_evaluate` (state, bookkeeping, files)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: Path, run: Setup):
        self.config = config
        self.workdir = workdir
        self.run = run
        self.metrics_path = workdir / "metrics.jsonl"
        self.curvature_path = workdir / "curvature.jsonl"
        self.checkpointer = Checkpointer(workdir, config.max_checkpoints)
        self.timing = {
            "train_s": 0.0,
            "compile_s": 0.0,
            "eval_s": 0.0,
            "checkpoint_s": 0.0,
            "tracking_s": 0.0,
        }
        self.elapsed_before = 0.0
        self.start_time = time.perf_counter()
        self.tracker = None
        if config.curvature.every_steps > 0:
            from nmelab.train.tracking import CurvatureTracker

            self.tracker = CurvatureTracker(run, config.curvature)

    # -- bookkeeping ----------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start_time

    def meta(self, step: int) -> dict[str, Any]:
        return {"step": step, "elapsed_s": self.elapsed(), "timing": dict(self.timing)}

    def restore_or_init(self) -> tuple[TrainState, dict[str, jax.Array], int, bool]:
        """Return ``(state, acc, step, resumed)``."""
        run = self.run
        acc = accumulator(run.config.num_seeds)
        if self.checkpointer.latest_step() is None:
            return init_state(run), acc, 0, False
        state, acc, meta = self.checkpointer.restore(abstract_state(run), acc)
        step = int(state.step)
        self.elapsed_before = float(meta.get("elapsed_s", 0.0))
        self.timing.update(meta.get("timing", {}))
        for path in (self.metrics_path, self.curvature_path):
            metrics_io.truncate_jsonl(path, step)
        return state, acc, step, True

    def book_compile(self, tic: float) -> bool:
        """Book a first call of this process (tracing and compilation) since ``tic`` as compile time.

        Returns ``False``, the new value of the loop's ``first_call`` flag.
        """
        self.timing["compile_s"] += time.perf_counter() - tic
        return False

    def steady_seconds(self) -> float:
        """Training time without the compilation of the step: the basis of examples/s."""
        return self.timing["train_s"] - self.timing["compile_s"]

    def log(self, record: dict[str, Any]) -> None:
        metrics_io.append_jsonl(self.metrics_path, record)

    # -- periodic actions -------------------------------------------------------------------

    def train_record(
        self, step: int, acc: dict[str, jax.Array], examples: int, seconds: float
    ) -> dict[str, Any]:
        """The training-metrics record of the log interval ending at ``step`` (fetches ``acc``)."""
        sums = {k: np.asarray(v, dtype=np.float64) for k, v in acc.items()}
        count = sums.pop("count")
        lr = float(sums.pop("lr")[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            means = {k: v / count for k, v in sums.items()}
        return {
            "step": step,
            "epoch": step / self.run.steps_per_epoch,
            "split": "train",
            **means,
            "lr": lr,
            "examples_per_sec": examples / seconds if seconds > 0 else None,
            "elapsed_s": self.elapsed(),
        }

    def flush(self, pending: list[dict[str, Any]], progress: _Progress) -> None:
        """Write the pending training records (and show the last one); empties ``pending``."""
        for record in pending:
            self.log(record)
        if pending:
            last = pending[-1]
            progress.update(last["step"], last["loss"], last["accuracy"], last["examples_per_sec"])
        pending.clear()

    def eval_and_log(self, state: TrainState, step: int, final: bool = False) -> dict[str, Any]:
        tic = time.perf_counter()
        result = evaluate(self.run, state, "test")
        record = {
            "step": step,
            "epoch": step / self.run.steps_per_epoch,
            "split": "test",
            **result,
            "elapsed_s": self.elapsed(),
        }
        if final:
            record["final"] = True
        self.log(record)
        self.timing["eval_s"] += time.perf_counter() - tic
        return result

    def track(self, state: TrainState, step: int) -> None:
        tic = time.perf_counter()
        record = self.tracker.measure(state, step)
        record = {"step": step, "epoch": step / self.run.steps_per_epoch, **record}
        metrics_io.append_jsonl(self.curvature_path, record)
        self.timing["tracking_s"] += time.perf_counter() - tic

    def save(self, state: TrainState, acc: Any, step: int) -> None:
        tic = time.perf_counter()
        self.checkpointer.save(step, state, acc, self.meta(step))
        self.timing["checkpoint_s"] += time.perf_counter() - tic

    # -- training -------------------------------------------------------------------------

    def host_batches(self, state: TrainState, epoch: int, position: int) -> Iterator[Any]:
        key = np.asarray(state.data_key[0])
        return self.run.source.train_batches(self.config.batch_size, key, epoch, position)

    def next_boundary(self, step: int) -> int:
        config, run = self.config, self.run
        candidates = [
            run.total_steps,
            (step // run.steps_per_epoch + 1) * run.steps_per_epoch,
            _next_multiple(step, config.log_every_steps),
        ]
        if config.checkpoint_every_steps > 0:
            candidates.append(_next_multiple(step, config.checkpoint_every_steps))
        if config.curvature.every_steps > 0:
            candidates.append(_next_multiple(step, config.curvature.every_steps))
        if config.stop_after_steps is not None and config.stop_after_steps > step:
            candidates.append(config.stop_after_steps)
        return min(c for c in candidates if c > step)

    def train(self) -> dict[str, Any]:
        config, run = self.config, self.run
        program, source, reg = run.program, run.source, run.regularizer
        state, acc, step, resumed = self.restore_or_init()
        # nmelab.parallel (issue 8): data-parallel placement and m-sharpness; no-op on one device
        data_parallel = parallel.DataParallel.from_config(config)
        state, reg = data_parallel.place(state), data_parallel.regularizer(reg)
        data_parallel.place_source(source)
        data_parallel.activate()
        spe, total = run.steps_per_epoch, run.total_steps
        batch = config.batch_size * config.num_seeds
        eval_every = config.eval_every_epochs * spe
        progress = _Progress(
            bool(config.progress), total, step, f"{config.model}/{config.regularizer}"
        )
        if self.tracker is not None and not resumed:
            self.track(state, 0)
        epoch_cache: tuple[int, Any] | None = None  # host data: the epoch's batches
        block: tuple[int, Any, Any] | None = None  # device data: permutations of K epochs
        block_size = program.epoch_block_size(config.num_seeds)
        batch_iter: Iterator[Any] | None = None
        last_log_time, last_log_step = self.steady_seconds(), step
        first_call, stopped = True, False
        pending: list[dict[str, Any]] = []  # training records fetched, not yet written
        all_diverged = bool((np.asarray(state.diverged_at) >= 0).all())
        try:
            while step < total and not all_diverged:
                epoch, position = divmod(step, spe)
                end = self.next_boundary(step)
                tic = time.perf_counter()
                if source.on_device:
                    if block is None or not block[0] <= epoch < block[0] + block_size:
                        call = time.perf_counter()
                        first_block = block is None
                        block = (epoch, *program.epoch_block(state.data_key, epoch, block_size))
                        if first_block:
                            self.book_compile(call)
                    first_epoch, permutations, augmentation_keys = block
                    for _ in range(end - step):
                        call = time.perf_counter()
                        state, acc = program.train_step(
                            state,
                            acc,
                            reg,
                            source.x_train,
                            source.y_train,
                            permutations,
                            augmentation_keys,
                            first_epoch,
                        )
                        if first_call:
                            first_call = self.book_compile(call)
                else:
                    if epoch_cache is None or epoch_cache[0] != epoch:
                        call = time.perf_counter()
                        batch_iter = self.host_batches(state, epoch, position)
                        epoch_cache = (epoch, program.epoch_data(state.data_key, epoch))
                        if first_call:
                            self.book_compile(call)
                    augmentation_keys = epoch_cache[1][1]
                    for _ in range(end - step):
                        xb, yb = next(batch_iter)
                        call = time.perf_counter()
                        state, acc = program.train_batch(state, acc, reg, xb, yb, augmentation_keys)
                        if first_call:
                            first_call = self.book_compile(call)
                step = end
                if end % spe == 0:
                    epoch_cache = None
                self.timing["train_s"] += time.perf_counter() - tic
                # the records of the previous log point are written while the device trains
                self.flush(pending, progress)

                actions = (
                    _is_multiple(step, config.log_every_steps)
                    or step == total
                    or (eval_every and _is_multiple(step, eval_every))
                    or _is_multiple(step, config.checkpoint_every_steps)
                    or (
                        self.tracker is not None
                        and _is_multiple(step, config.curvature.every_steps)
                    )
                )
                if not actions:
                    if config.stop_after_steps is not None and step >= config.stop_after_steps:
                        stopped = True
                        break
                    continue
                tic = time.perf_counter()
                jax.block_until_ready(state.step)
                self.timing["train_s"] += time.perf_counter() - tic
                if _is_multiple(step, config.log_every_steps) or step == total:
                    now = self.steady_seconds()
                    examples = (step - last_log_step) * batch
                    pending.append(self.train_record(step, acc, examples, now - last_log_time))
                    acc = accumulator(config.num_seeds)
                    last_log_time, last_log_step = now, step
                all_diverged = bool((np.asarray(state.diverged_at) >= 0).all())
                stopped = config.stop_after_steps is not None and step >= config.stop_after_steps
                only_log = not (
                    (eval_every and _is_multiple(step, eval_every))
                    or (
                        self.tracker is not None
                        and _is_multiple(step, config.curvature.every_steps)
                    )
                    or _is_multiple(step, config.checkpoint_every_steps)
                    or step == total
                    or all_diverged
                    or stopped
                )
                if only_log:
                    continue
                self.flush(pending, progress)
                progress.update(step)
                if eval_every and _is_multiple(step, eval_every) and step < total:
                    self.eval_and_log(state, step)
                if self.tracker is not None and (
                    _is_multiple(step, config.curvature.every_steps) or step == total
                ):
                    self.track(state, step)
                if _is_multiple(step, config.checkpoint_every_steps) and step < total:
                    self.save(state, acc, step)
                if all_diverged or stopped:
                    break
        finally:
            self.flush(pending, progress)
            progress.close()
            data_parallel.deactivate()  # nmelab.parallel (issue 8)
        if stopped:
            self.checkpointer.close()
            return {"stopped": True, "step": step}
        self.save(state, acc, step)
        self.checkpointer.close()
        return self.finish(state, step)

    def finish(self, state: TrainState, step: int) -> dict[str, Any]:
        config, run = self.config, self.run
        test = self.eval_and_log(state, step, final=True)
        train = None
        if config.final_train_eval:
            tic = time.perf_counter()
            train = evaluate(run, state, "train")
            self.timing["eval_s"] += time.perf_counter() - tic
        diverged_at = np.asarray(state.diverged_at)
        num_classes = run.source.num_classes
        statuses, rows = (
            [],
            {k: [] for k in ("test_loss", "test_accuracy", "train_loss", "train_accuracy")},
        )
        for i in range(config.num_seeds):
            alive = diverged_at[i] < 0
            values = {
                "test_loss": test["loss"][i],
                "test_accuracy": test["accuracy"][i],
                "train_loss": None if train is None else train["loss"][i],
                "train_accuracy": None if train is None else train["accuracy"][i],
            }
            for key, value in values.items():
                rows[key].append(float(value) if alive and value is not None else None)
            statuses.append(
                classify(
                    rows["test_loss"][-1],
                    rows["test_accuracy"][-1],
                    num_classes,
                    int(diverged_at[i]),
                )
            )
        if train is not None:
            self.log(
                {
                    "step": step,
                    "epoch": step / run.steps_per_epoch,
                    "split": "train_eval",
                    **train,
                    "final": True,
                }
            )
        train_examples = step * config.batch_size * config.num_seeds
        summary = {
            "status": statuses,
            "diverged_step": [int(d) if d >= 0 else None for d in diverged_at],
            "seeds": [config.seed + i for i in range(config.num_seeds)],
            **rows,
            "steps": step,
            "total_steps": run.total_steps,
            "epochs": step / run.steps_per_epoch,
            "num_params": run.num_params,
            "num_classes": num_classes,
            "wall_time_s": self.elapsed(),
            "examples_per_sec": train_examples / max(self.steady_seconds(), 1e-9),
            "timing": dict(self.timing),
            "dataset": config.dataset,
            "model": config.model,
            "activation": config.activation,
            "regularizer": config.regularizer,
            "regularizer_params": config.regularizer_params.to_dict(),
            "regularizer_record": run.regularizer.record(),
        }
        metrics_io.write_json(self.workdir / "summary.json", summary)
        return metrics_io.to_jsonable(summary)


def _check_same_config(workdir: Path, config_dict: dict[str, Any]) -> None:
    path = workdir / "config.json"
    if not path.exists():
        return
    differences = config_lib.config_differences(metrics_io.read_json(path), config_dict)
    if differences:
        raise ValueError(
            f"workdir {str(workdir)!r} holds a run of a different config (keys differ: "
            f"{', '.join(differences)}); use a fresh workdir or the same config"
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming from its checkpoint) and return the summary.

    Args:
      config: a training config; see :mod:`nmelab.train.config` for the keys.
      workdir: the run's folder (created if missing).

    Returns:
      The summary dict (also written to ``summary.json``): per-seed lists ``status``
      (``"ok" | "diverged" | "collapsed"``), ``diverged_step``, ``test_loss``, ``test_accuracy``,
      ``train_loss``, ``train_accuracy`` (``None`` for diverged seeds; the train metrics are an
      eval-mode pass over the training set), ``seeds``, ``steps``, ``total_steps``, ``epochs``,
      ``num_params`` (one seed's model), ``num_classes``, ``wall_time_s`` (summed over resumes),
      ``examples_per_sec`` (all seeds, training time without compilation) and ``timing``
      (seconds: ``train_s`` the training loop including ``compile_s``, the first step call's
      tracing and compilation; ``eval_s``, ``checkpoint_s``, ``tracking_s``). With
      ``config.stop_after_steps`` set (a simulated kill, for tests) training stops after that step
      without a final checkpoint or summary and ``{"stopped": True, "step": step}`` is returned.

    Raises:
      ValueError: an invalid config, or a workdir holding a run of a different config.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_dict = config_lib.config_to_dict(config)
    summary_path = workdir / "summary.json"
    if summary_path.exists():
        _check_same_config(workdir, config_dict)
        return metrics_io.read_json(summary_path)
    run = setup(config)
    _check_same_config(workdir, config_dict)
    metrics_io.write_json(workdir / "config.json", config_dict)
    return _Loop(config, workdir, run).train()


def restore_state(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
    """The train state of ``workdir``'s latest checkpoint (e.g. the final weights of a run).

    Raises:
      FileNotFoundError: no checkpoint in ``workdir``.
    """
    run = setup(config)
    checkpointer = Checkpointer(workdir, config.max_checkpoints)
    try:
        state, _, _ = checkpointer.restore(abstract_state(run), accumulator(config.num_seeds))
    finally:
        checkpointer.close()
    return state
