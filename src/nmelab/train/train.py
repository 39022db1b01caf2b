"""The trainer: a pure single-seed :func:`train_step` and the loop of :func:`train_and_evaluate`.

Shaped like the flax ``examples/imagenet`` trainer, to be read top to bottom and forked:

1. :func:`nmelab.train.build_run` turns the config into a frozen :class:`~nmelab.train.Run`
   (data, model, optimizer, regularizer, step counts, mesh), once.
2. :func:`train_step` advances one seed by one SGD step of any regularizer (pure, jittable).
3. :func:`make_train_step` compiles it for the run's seeds (:func:`nmelab.train.seeds.over_seeds`),
   with the batch made inside the step from the source's description
   (:mod:`nmelab.train.sources`) and the metric sums updated in place.
4. :func:`train_and_evaluate` calls the compiled step once per optimizer step and, after each, asks
   :func:`due_actions` which periodic actions are due (log, evaluate, track curvature, checkpoint).

The train step of one seed (paper eq. 1 is ``value``; the direction is the regularizer's)::

    key_t        = fold_in(step_key, t)                     # regularizer noise, dropout
    objective    = Objective(apply_fn(θ, x) -> (z, (z, stats')), loss, has_aux=True)
    (value, (z, stats')), d = reg.value_and_grad(objective, θ, (x, y), key_t)
    θ', opt'     = optax update of θ along d                # L2 decay, momentum, schedule
    frozen       if value, loss(z) or θ' is not finite      # keeps the last finite state

``z`` and ``stats'`` come from the regularizer's clean pass at ``θ``: the logged loss and accuracy
are those of the clean minibatch, and ``value`` (logged as ``objective``) is what the regularizer
minimises. BatchNorm: the step runs the model in train mode; every pass of the regularizer
normalises with its own batch statistics and the running statistics are updated from the clean
pass only. Evaluation and curvature tracking run in eval mode (running statistics).

One compiled step per Python call, dispatched asynchronously, never a ``lax.fori_loop`` or
``lax.scan`` over steps: XLA's CPU backend runs convolutions inside a while loop 20-50 times slower
than at top level (1D and 2D CNNs), and for an MLP a loop saved nothing measurable.

Workdir layout::

    config.json       the config (written at the start)
    metrics.jsonl     one record per log step ("split": "train"), per evaluation ("test") and the
                      final evaluations ("final": true); metric values are per-seed lists
    curvature.jsonl   curvature tracking records (when ``curvature.every_steps > 0``)
    checkpoints/      Orbax checkpoints (every ``checkpoint_every_steps`` and at the end)
    summary.json      written last: the run is finished when it exists

Resume. A finished run (``summary.json``) returns its summary. Otherwise the newest checkpoint that
verifies is restored (damaged newer ones are set aside with a warning,
:mod:`nmelab.train.checkpoint`), the logs are cut back to its step, and training continues.
Batches, noise and dropout are pure functions of ``(key, step)``, so on a deterministic backend
(CPU) the resumed run equals the uninterrupted one bitwise.

Per-seed outcome (``summary["status"]``): ``"diverged"`` (a step produced a NaN or inf; the seed is
frozen at its last finite state, ``diverged_step`` is that 0-based step, final metrics are
``null``; the run stops when every seed has diverged), ``"collapsed"`` (a constant predictor, see
:func:`classify`) or ``"ok"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from nmelab import data as nmedata
from nmelab import losses, parallel
from nmelab._io import read_json, to_jsonable
from nmelab.objective import Objective
from nmelab.train import config as config_lib
from nmelab.train.checkpoint import Checkpointer
from nmelab.train.progress import Progress
from nmelab.train.run import Run, build_run
from nmelab.train.seeds import over_seeds
from nmelab.train.state import TrainState, seed_axes, seed_keys, split_seed_key, zero_metrics
from nmelab.train.workdir import Workdir, run_summary, train_record

__all__ = [
    "abstract_state",
    "due_actions",
    "eval_step",
    "evaluate",
    "init_seed",
    "init_state",
    "make_eval_step",
    "make_train_step",
    "restore_state",
    "train_and_evaluate",
    "train_objective",
    "train_step",
]

StopFn = Callable[[int], bool]
"""``stop_fn(step) -> bool``: stop after ``step`` as if killed (no final checkpoint, no summary)."""


_COMPILED: dict[tuple[str, str], Callable[..., Any]] = {}
"""The compiled steps of the last :data:`_NUM_COMPILED` distinct programs, by ``Run.compile_key``.

A sweep runs many configs that differ only in seeds or regularizer strengths, one after another
in a worker process: they share one compiled step instead of tracing and compiling it per run
(seconds per run on CPU). The cached functions close over no data (the training set is an
argument), so a cache entry holds no dataset alive."""

_NUM_COMPILED = 8


def _compiled(kind: str, run: Run, build: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    key = (kind, run.compile_key)
    if key not in _COMPILED:
        if len(_COMPILED) >= _NUM_COMPILED:
            del _COMPILED[next(iter(_COMPILED))]  # the oldest
        _COMPILED[key] = build()
    return _COMPILED[key]


# ------------------------------------------------------------------------------------------------
# state


def _stacked_state(run: Run, seeds: tuple[Any, Any, jax.Array, jax.Array]) -> TrainState:
    params, batch_stats, data_key, step_key = seeds
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=jax.vmap(run.tx.init)(params),
        data_key=data_key,
        step_key=step_key,
        diverged_at=jnp.full((run.num_seeds,), -1, jnp.int32),
    )


def init_seed(
    model: nn.Module, input_shape: tuple[int, ...], key: jax.Array
) -> tuple[Any, Any, jax.Array, jax.Array]:
    """``key -> (params, batch_stats, data_key, step_key)`` of one seed."""
    init_key, data_key, step_key = split_seed_key(key)
    variables = model.init(init_key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
    return variables["params"], variables.get("batch_stats", {}), data_key, step_key


def init_state(run: Run) -> TrainState:
    """The stacked initial state: ``PRNGKey(seed + i)`` initialises seed ``i`` (params, data, noise).

    One compiled single-seed init per seed, stacked: compiling the ``vmap`` of a flax init costs
    about three times as much on XLA's CPU backend, for the same values.
    """
    fn = functools.partial(init_seed, run.model, run.source.input_shape)
    init = _compiled("init", run, lambda: jax.jit(fn))
    seeds = [jax.device_get(init(key)) for key in seed_keys(run.config.seed, run.num_seeds)]
    return _stacked_state(run, jax.tree.map(lambda *leaves: jnp.asarray(np.stack(leaves)), *seeds))


def abstract_state(run: Run) -> TrainState:
    """Shapes and dtypes of :func:`init_state` (``jax.ShapeDtypeStruct`` leaves), computing nothing."""
    keys = jax.ShapeDtypeStruct((run.num_seeds, 2), jnp.uint32)
    fn = functools.partial(init_seed, run.model, run.source.input_shape)
    return jax.eval_shape(lambda k: _stacked_state(run, jax.vmap(fn)(k)), keys)


def _place(run: Run, tree: Any) -> Any:
    """Replicate ``tree`` over the run's mesh (unchanged on one device)."""
    return tree if run.mesh is None else parallel.replicate(tree, run.mesh)


# ------------------------------------------------------------------------------------------------
# the steps


def _tree_all_finite(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])) if leaves else True


def train_objective(model: nn.Module, loss: str, batch_stats: Any, dropout_key: jax.Array):
    """The train-mode objective; ``apply_fn(θ, x) -> (z, (z, new_batch_stats))``."""

    def apply_fn(params: Any, x: jax.Array) -> tuple[jax.Array, Any]:
        rngs = {"dropout": dropout_key}
        if not batch_stats:
            logits = model.apply({"params": params}, x, train=True, rngs=rngs)
            return logits, (logits, batch_stats)
        variables = {"params": params, "batch_stats": batch_stats}
        logits, mutated = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
        return logits, (logits, mutated["batch_stats"])

    return Objective(apply_fn, loss, has_aux=True)


def train_step(
    state: TrainState,
    batch: tuple[jax.Array, jax.Array],
    reg: Any,
    *,
    model: nn.Module,
    loss: str,
    tx: optax.GradientTransformation,
    learning_rate_fn: optax.Schedule,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step of one seed along ``reg``'s direction (see the module docstring).

    Args:
      state: one seed's state (no seed axis).
      batch: ``(x, y)``.
      reg: the regularizer (a pytree: its float hyperparameters are traced, so changing them does
        not recompile).
      model: the flax module (applied in train mode).
      loss: the loss name.
      tx: the optimizer.
      learning_rate_fn: the schedule (for the logged ``lr``; ``tx`` applies it).

    Returns:
      ``(state, metrics)``: the next state (the same parameters when the step was not finite or
      the seed had diverged before) and this step's ``loss``, ``objective``, ``accuracy`` (zero
      when not kept), ``count`` (1 when kept, else 0) and ``lr``.
    """
    reg_key, dropout_key = jax.random.split(jax.random.fold_in(state.step_key, state.step))
    objective = train_objective(model, loss, state.batch_stats, dropout_key)
    (value, (logits, new_stats)), direction = reg.value_and_grad(
        objective, state.params, batch, reg_key
    )
    updates, new_opt_state = tx.update(direction, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    loss_value = losses.get(loss)(logits, batch[1])
    finite = jnp.isfinite(value) & jnp.isfinite(loss_value)
    finite = finite & _tree_all_finite(new_params) & _tree_all_finite(new_stats)
    alive = state.diverged_at < 0
    keep = finite & alive

    def select(new: Any, old: Any) -> Any:
        return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)

    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == batch[1]).astype(jnp.float32))
    metrics = {
        "loss": jnp.where(keep, loss_value, 0.0),
        "objective": jnp.where(keep, value, 0.0),
        "accuracy": jnp.where(keep, accuracy, 0.0),
        "count": keep.astype(jnp.float32),
        "lr": learning_rate_fn(state.step).astype(jnp.float32),
    }
    new_state = state.replace(
        step=state.step + 1,
        params=select(new_params, state.params),
        batch_stats=select(new_stats, state.batch_stats),
        opt_state=select(new_opt_state, state.opt_state),
        diverged_at=jnp.where(alive & ~finite, state.step, state.diverged_at),
    )
    return new_state, metrics


def make_train_step(run: Run) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """The compiled ``(state, sums, reg, arrays, description) -> (state, sums)`` of every seed.

    Each seed's batch is made inside the step from the source's ``arrays`` and description
    (gathered by index for device data), augmented with ``fold_in(epoch augmentation key, position
    in epoch)`` when the run augments, split over ``run.mesh`` (data parallel), and trained on with
    :func:`train_step`; its metrics are added to the per-seed sums. State and sums are donated.
    """
    step_fn = functools.partial(
        train_step,
        model=run.model,
        loss=run.loss,
        tx=run.tx,
        learning_rate_fn=run.learning_rate_fn,
    )
    seed_batch, augment, mesh = run.source.seed_batch, run.augment, run.mesh
    steps_per_epoch = run.steps_per_epoch

    def one_seed(state: TrainState, sums: Any, reg: Any, arrays: Any, description: Any) -> Any:
        (x, y), augmentation_key = seed_batch(arrays, description, state.step)
        if augment:
            position = state.step % steps_per_epoch
            x = nmedata.random_crop_flip(x, jax.random.fold_in(augmentation_key, position))
        state, metrics = step_fn(state, parallel.constrain_batch((x, y), mesh), reg)
        sums = {k: metrics[k] if k == "lr" else sums[k] + metrics[k] for k in sums}
        return state, sums

    axes = seed_axes()
    in_axes = (axes, 0, None, None, 0)
    seeds = over_seeds(one_seed, run.num_seeds, run.seed_batching, in_axes, (axes, 0))
    return _compiled("train", run, lambda: jax.jit(seeds, donate_argnums=(0, 1)))


def eval_step(
    params: Any,
    batch_stats: Any,
    x: jax.Array,
    y: jax.Array,
    mask: jax.Array,
    *,
    model: nn.Module,
    loss: str,
) -> jax.Array:
    """``(2,)`` sums over ``mask`` of one seed's per-example loss and correct predictions."""
    variables = (
        {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
    )
    logits = model.apply(variables, x, train=False)
    loss_fn = losses.get(loss)
    per_example = jax.vmap(lambda z, t: loss_fn(z[None], t[None]))(logits, y)
    correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
    mask = mask.astype(jnp.float32)
    return jnp.stack([jnp.sum(jnp.where(mask > 0, per_example, 0.0)), jnp.sum(correct * mask)])


def make_eval_step(run: Run) -> Callable[..., jax.Array]:
    """The compiled ``(params, batch_stats, x, y, mask) -> (S, 2)`` sums of every seed."""
    fn = functools.partial(eval_step, model=run.model, loss=run.loss)
    axes = (0, 0, None, None, None)
    seeds = over_seeds(fn, run.num_seeds, run.seed_batching, axes, 0)
    return _compiled("eval", run, lambda: jax.jit(seeds))


def evaluate(
    run: Run, eval_fn: Callable[..., jax.Array], state: TrainState, split: str
) -> dict[str, np.ndarray]:
    """Mean loss and accuracy of every seed on the ``"train"`` or ``"test"`` split, eval mode.

    Batches of ``run.eval_batch_size`` examples (the last one padded and masked), so both splits
    share one compiled evaluation step.
    """
    size = run.eval_batch_size
    sums, count = np.zeros((run.num_seeds, 2)), 0
    for xb, yb in run.source.eval_batches(split, size):
        num = len(yb)
        mask = np.arange(size) < num
        if num < size:
            xb = np.concatenate([xb, np.zeros((size - num, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((size - num,), yb.dtype)])
        sums += np.asarray(eval_fn(state.params, state.batch_stats, xb, yb, mask), np.float64)
        count += num
    return {"loss": sums[:, 0] / count, "accuracy": sums[:, 1] / count}


# ------------------------------------------------------------------------------------------------
# the loop


def due_actions(step: int, total: int, periods: dict[str, int]) -> set[str]:
    """The periodic actions due after ``step`` (``periods``: action -> period, 0 = never).

    Every action with ``step % period == 0``; at the last step ``log`` and ``track`` are always due
    and ``eval`` and ``checkpoint`` never (the final evaluation and checkpoint follow the loop).
    """
    due = {name for name, period in periods.items() if period > 0 and step % period == 0}
    if step == total:
        due = (
            (due - {"eval", "checkpoint"}) | {"log"} | ({"track"} if "track" in periods else set())
        )
    return due


def _restore_or_init(
    run: Run, checkpointer: Checkpointer, files: Workdir
) -> tuple[TrainState, Any, int]:
    sums = zero_metrics(run.num_seeds)
    restored = checkpointer.restore_newest_good(abstract_state(run), sums, set_aside=files.writer)
    if restored is None:
        files.cut_logs(-1)  # records of a run killed before its first checkpoint are redone
        return _place(run, init_state(run)), _place(run, sums), 0
    state, sums, meta = restored
    step = int(state.step)
    files.elapsed_before = float(meta.get("elapsed_s", 0.0))
    files.timing.update(meta.get("timing", {}))
    files.cut_logs(step)
    return _place(run, state), _place(run, sums), step


def _train(run: Run, files: Workdir, stop_fn: StopFn | None) -> dict[str, Any]:
    config = run.config
    checkpointer = Checkpointer(files.path, config.max_checkpoints)
    step_fn, eval_fn = make_train_step(run), make_eval_step(run)
    tracker = None
    if config.curvature.every_steps > 0:
        from nmelab.train.tracking import CurvatureTracker

        tracker = CurvatureTracker(run, config.curvature)

    def log_evaluation(state: TrainState, step: int, split: str, final: bool = False) -> dict:
        result = evaluate(run, eval_fn, state, split)
        record = {"step": step, "epoch": step / run.steps_per_epoch, "split": split, **result}
        record["elapsed_s"] = files.elapsed()
        files.append("metrics.jsonl", {**record, "final": True} if final else record)
        files.lap("eval_s")
        return result

    def track(state: TrainState, step: int) -> None:
        record = tracker.measure(state, step)
        files.append("curvature.jsonl", {"step": step, "epoch": step / run.steps_per_epoch, **record})  # fmt: skip
        files.lap("tracking_s")

    state, sums, step = _restore_or_init(run, checkpointer, files)
    periods = {
        "log": config.log_every_steps,
        "eval": config.eval_every_epochs * run.steps_per_epoch,
        "checkpoint": config.checkpoint_every_steps,
        **({"track": config.curvature.every_steps} if tracker else {}),
    }
    description = f"{config.model}/{config.regularizer}"
    progress = Progress(bool(config.progress), run.total_steps, step, description)
    files.lap(None)
    if tracker is not None and step == 0:
        track(state, 0)
    # a copy of the keys: the state's own arrays are donated to the step
    batches = run.source.train_batches(_place(run, jnp.array(state.data_key)), step)
    arrays = run.source.arrays
    last_log = (step, files.steady())
    first_call, stopped = True, False
    try:
        while step < run.total_steps:
            state, sums = step_fn(state, sums, run.regularizer, arrays, next(batches))
            if first_call:  # tracing and compilation of the step (and of the first batch)
                before = files.timing["train_s"]
                files.lap("train_s")
                files.timing["compile_s"] += files.timing["train_s"] - before
                first_call = False
            step += 1
            stopped = stop_fn is not None and stop_fn(step)
            due = due_actions(step, run.total_steps, periods)
            if not (due or stopped):
                continue
            jax.block_until_ready(state.step)
            files.lap("train_s")
            if "log" in due:
                examples = (step - last_log[0]) * config.batch_size * config.num_seeds
                record = train_record(run, step, sums, examples, files.steady() - last_log[1])
                files.append("metrics.jsonl", {**record, "elapsed_s": files.elapsed()})
                progress.update(
                    step, record["loss"], record["accuracy"], record["examples_per_sec"]
                )
                sums, last_log = _place(run, zero_metrics(run.num_seeds)), (step, files.steady())
            if "eval" in due:
                log_evaluation(state, step, "test")
            if "track" in due:
                track(state, step)
            if "checkpoint" in due:
                checkpointer.save(step, state, sums, files.meta(step))
                files.lap("checkpoint_s")
            if stopped or bool((np.asarray(state.diverged_at) >= 0).all()):
                break
    finally:
        progress.close()
    if stopped:
        checkpointer.close()
        return {"stopped": True, "step": step}
    checkpointer.save(step, state, sums, files.meta(step))
    checkpointer.close()
    files.lap("checkpoint_s")
    evaluations = {"test": log_evaluation(state, step, "test", final=True)}
    if config.final_train_eval:
        evaluations["train"] = evaluate(run, eval_fn, state, "train")
        record = {"step": step, "epoch": step / run.steps_per_epoch, "split": "train_eval"}
        files.append("metrics.jsonl", {**record, **evaluations["train"], "final": True})
        files.lap("eval_s")
    summary = run_summary(run, files, state, step, evaluations)
    files.write_json("summary.json", summary)
    return to_jsonable(summary)


def _check_same_config(workdir: Path, config_dict: dict[str, Any]) -> None:
    path = workdir / "config.json"
    if not path.exists():
        return
    differences = config_lib.config_differences(read_json(path), config_dict)
    if differences:
        raise ValueError(
            f"workdir {str(workdir)!r} holds a run of a different config (keys differ: "
            f"{', '.join(differences)}); use a fresh workdir or the same config"
        )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, *, stop_fn: StopFn | None = None
) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming from its checkpoint) and return the summary.

    Args:
      config: a training config; see :mod:`nmelab.train.config` for the keys.
      workdir: the run's folder (created if missing).
      stop_fn: for tests of resume: ``stop_fn(step)`` is asked after every step; ``True`` stops
        the run there as if it were killed (the periodic actions of that step done, no final
        checkpoint, no summary) and ``{"stopped": True, "step": step}`` is returned.

    Returns:
      The summary dict (also written to ``summary.json``): per-seed lists ``status``
      (``"ok" | "diverged" | "collapsed"``), ``diverged_step``, ``test_loss``, ``test_accuracy``,
      ``train_loss``, ``train_accuracy`` (``None`` for diverged seeds; the train metrics are an
      eval-mode pass over the training set), ``seeds``, ``steps``, ``total_steps``, ``epochs``,
      ``num_params`` (one seed's model), ``num_classes``, ``wall_time_s`` (summed over resumes),
      ``examples_per_sec`` (all seeds, training time without compilation) and ``timing``
      (seconds: ``train_s`` the training loop including ``compile_s``, the first step call's
      tracing and compilation; ``eval_s``, ``checkpoint_s``, ``tracking_s``).

    Raises:
      ValueError: an invalid config, a workdir holding a run of a different config, an
        unreadable ``summary.json``/``config.json`` (naming it), or checkpoints none of which
        can be read (naming the folder).
    """
    workdir = Path(workdir)
    config_dict = config_lib.config_to_dict(config)
    if (workdir / "summary.json").exists():
        _check_same_config(workdir, config_dict)
        return read_json(workdir / "summary.json")
    run = build_run(config)
    _check_same_config(workdir, config_dict)
    workdir.mkdir(parents=True, exist_ok=True)
    files = Workdir(workdir)
    files.write_json("config.json", config_dict)
    return _train(run, files, stop_fn)


def restore_state(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainState:
    """The stacked train state of ``workdir``'s newest good checkpoint (e.g. a run's final weights).

    Raises:
      ValueError: no readable checkpoint in ``workdir`` (naming the folder).
    """
    run = build_run(config)
    checkpointer = Checkpointer(workdir, config.max_checkpoints, create=False)
    try:
        restored = checkpointer.restore_newest_good(
            abstract_state(run), zero_metrics(run.num_seeds), set_aside=False
        )
    finally:
        checkpointer.close()
    if restored is None:
        raise ValueError(f"{checkpointer.directory}: no checkpoint (train the run first)")
    return restored[0]
