"""The compiled pieces of a run: init, the train step of every regularizer, and evaluation.

A :class:`Program` holds everything static about a run (model, loss, optimizer, batch sizes, data
layout) and the jitted functions built from it. Programs are cached by their :class:`ProgramSpec`,
so a sweep over regularizer strengths, seeds or regularizers in one process compiles each step once:
the regularizer is a *pytree argument* of the step (its float hyperparameters are traced leaves),
and the objective is built inside the step from the traced BatchNorm statistics.

The train step (one seed; ``jax.vmap`` or an unrolled loop adds the seed axis)::

    key_t        = fold_in(step_key, t)                     # regularizer noise, dropout
    objective    = Objective(apply_fn(θ, x) -> (z, (z, stats')), loss, has_aux=True)
    (value, (z, stats')), d = reg.value_and_grad(objective, θ, (x, y), key_t)
    θ', opt'     = optax update of θ along d                # L2 decay, momentum, schedule
    frozen seed  if value, loss(z) or θ' is not finite      # keeps the last finite state

``z`` and ``stats'`` come from the regularizer's clean pass at ``θ``: the logged loss and accuracy
are those of the clean minibatch, and ``value`` (logged as ``objective``) is what the regularizer
minimises.

BatchNorm policy (shared by every regularizer): the train step runs the model in train mode (batch
statistics); every pass of the regularizer (clean, perturbed, noisy) normalises with the
statistics of its own forward pass, and the running statistics are updated from the clean pass
only. Evaluation and curvature tracking run in eval mode (running statistics).

Data. With ``on_device`` the training set lives on the device; each step gathers its seed's
batch by index from the permutation :func:`nmelab.data.epoch_permutation` ``(data_key, epoch)``
and augments it with ``fold_in(augmentation key of the epoch, position in epoch)`` - the same
batches :func:`nmelab.data.batches` yields on the host (:meth:`Program.train_step`). Otherwise
(streaming data, one seed) the host feeds one batch per call of :meth:`Program.train_batch`.

One compiled step per call, dispatched asynchronously from Python, never a ``lax.fori_loop`` or
``lax.scan`` over steps: XLA's CPU backend runs convolutions inside a while loop 20-50 times slower
than the same convolutions at top level (measured here on the 1D and 2D CNNs), and for an MLP the
loop saved nothing measurable over asynchronous dispatch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nmelab import data as nmedata
from nmelab import losses, parallel
from nmelab.objective import Objective
from nmelab.train import optim
from nmelab.train.state import TrainState, split_seed_key


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """The hashable, static description of a run (everything but seeds and regularizer values).

    Attributes:
      model: model name for :func:`nmelab.models.get`.
      model_kwargs: sorted ``(key, value)`` pairs of model keyword arguments (activation included).
      num_classes: number of classes.
      input_shape: shape of one example.
      loss: loss name.
      learning_rate, lr_schedule, warmup_steps, total_steps: the schedule.
      momentum, nesterov, weight_decay, weight_decay_mask: the optimizer.
      batch_size: training batch per seed.
      eval_batch_size: evaluation batch.
      steps_per_epoch: optimizer steps per epoch.
      num_train: training-set size (length of the per-epoch permutation).
      num_test: test-set size.
      augment: random crop + flip inside the step (images held as arrays).
      seed_batching: ``"vmap"`` (one batched step for all seeds) or ``"unroll"`` (the seeds'
        steps one after another in the same compiled program); see
        :func:`nmelab.train.loop.resolve_seed_batching`.
    """

    model: str
    model_kwargs: tuple[tuple[str, Any], ...]
    num_classes: int
    input_shape: tuple[int, ...]
    loss: str
    learning_rate: float
    lr_schedule: str
    warmup_steps: int
    total_steps: int
    momentum: float
    nesterov: bool
    weight_decay: float
    weight_decay_mask: str
    batch_size: int
    eval_batch_size: int
    steps_per_epoch: int
    num_train: int
    num_test: int
    augment: bool
    seed_batching: str = "vmap"


def _tree_all_finite(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _variables(params: Any, batch_stats: Any) -> dict[str, Any]:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def _accuracy(logits: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(jnp.float32))


class ModelFunctions:
    """The compiled functions that depend on the model and loss only (shared by many programs).

    Attributes:
      model: the flax module.
      loss_fn: the resolved loss.
      init_seed: jitted ``key -> (params, batch_stats, data_key, step_key)`` of one seed.
      eval_batch: jitted ``(params, batch_stats, x, y, mask) -> (S, 2)`` sums of the per-example
        loss and of correct predictions over ``mask``, every seed, eval mode.
    """

    def __init__(
        self,
        model: str,
        model_kwargs: tuple[tuple[str, Any], ...],
        num_classes: int,
        input_shape: tuple[int, ...],
        loss: str,
    ):
        from nmelab import models

        self.model: nn.Module = models.get(model, num_classes=num_classes, **dict(model_kwargs))
        self.loss_fn = losses.get(loss)
        self.input_shape = input_shape
        self.init_seed = jax.jit(self._init_seed)
        self.eval_batch = jax.jit(self._eval_batch)

    def _init_seed(self, key: jax.Array) -> tuple[Any, ...]:
        init_key, data_key, step_key = split_seed_key(key)
        x = jnp.zeros((1, *self.input_shape), jnp.float32)
        variables = self.model.init(init_key, x, train=False)
        return variables["params"], variables.get("batch_stats", {}), data_key, step_key

    def _batch_sums(
        self, params: Any, batch_stats: Any, x: jax.Array, y: jax.Array, mask: jax.Array
    ) -> jax.Array:
        logits = self.model.apply(_variables(params, batch_stats), x, train=False)
        per_example = jax.vmap(lambda z, t: self.loss_fn(z[None], t[None]))(logits, y)
        correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
        mask = mask.astype(jnp.float32)
        return jnp.stack([jnp.sum(jnp.where(mask > 0, per_example, 0.0)), jnp.sum(correct * mask)])

    def _eval_batch(
        self, params: Any, batch_stats: Any, x: jax.Array, y: jax.Array, mask: jax.Array
    ) -> jax.Array:
        return jax.vmap(self._batch_sums, in_axes=(0, 0, None, None, None))(
            params, batch_stats, x, y, mask
        )


@functools.lru_cache(maxsize=32)
def model_functions(
    model: str,
    model_kwargs: tuple[tuple[str, Any], ...],
    num_classes: int,
    input_shape: tuple[int, ...],
    loss: str,
) -> ModelFunctions:
    """The (cached) :class:`ModelFunctions` of a model and loss."""
    return ModelFunctions(model, model_kwargs, num_classes, input_shape, loss)


def _epoch_block(
    num_train: int, num_epochs: int, data_keys: jax.Array, first_epoch: jax.Array
) -> tuple[jax.Array, jax.Array]:
    def one(key: jax.Array, epoch: jax.Array) -> tuple[jax.Array, jax.Array]:
        permutation_key, augmentation_key = nmedata.epoch_keys(key, epoch)
        return jax.random.permutation(permutation_key, num_train), augmentation_key

    epochs = first_epoch + jnp.arange(num_epochs)
    return jax.vmap(lambda e: jax.vmap(lambda k: one(k, e))(data_keys))(epochs)


_EPOCH_BLOCK = jax.jit(_epoch_block, static_argnums=(0, 1))

EPOCH_BLOCK_ELEMENTS = 2**22
"""Permutation entries computed per call (``K`` epochs x ``S`` seeds x ``N`` examples <= this)."""


class Program:
    """The jitted functions of one :class:`ProgramSpec`; build with :func:`make_program`.

    Attributes:
      spec: the spec.
      model: the flax module.
      tx: the optax transformation.
      schedule: the learning rate as a function of the step.
      loss_fn: the resolved loss.
    """

    def __init__(self, spec: ProgramSpec):
        self.spec = spec
        self.functions = model_functions(
            spec.model, spec.model_kwargs, spec.num_classes, spec.input_shape, spec.loss
        )
        self.model: nn.Module = self.functions.model
        self.eval_batch = self.functions.eval_batch
        self.schedule = optim.learning_rate_schedule(
            spec.learning_rate, spec.total_steps, spec.warmup_steps, spec.lr_schedule
        )
        self.tx = optim.sgd(
            self.schedule, spec.momentum, spec.nesterov, spec.weight_decay, spec.weight_decay_mask
        )
        self.loss_fn = self.functions.loss_fn
        self.eval_batch_size = min(spec.eval_batch_size, max(spec.num_train, spec.num_test))
        self.train_step = jax.jit(self._train_step, donate_argnums=(0, 1))
        self.train_batch = jax.jit(self._train_batch, donate_argnums=(0, 1))

    # ----------------------------------------------------------------------------------------
    # objectives

    def train_objective(self, batch_stats: Any, dropout_key: jax.Array | None = None) -> Objective:
        """The train-mode objective at fixed running statistics ``batch_stats``.

        ``apply_fn(θ, x)`` returns ``(z, (z, new_batch_stats))``: the auxiliary output carries the
        logits (for the logged loss and accuracy) and the updated statistics.
        """
        model = self.model
        rngs = {"dropout": dropout_key} if dropout_key is not None else None

        def apply_fn(params: Any, x: jax.Array) -> tuple[jax.Array, Any]:
            if batch_stats:
                logits, mutated = model.apply(
                    {"params": params, "batch_stats": batch_stats},
                    x,
                    train=True,
                    mutable=["batch_stats"],
                    rngs=rngs,
                )
                return logits, (logits, mutated["batch_stats"])
            logits = model.apply({"params": params}, x, train=True, rngs=rngs)
            return logits, (logits, batch_stats)

        return Objective(apply_fn, self.spec.loss, has_aux=True)

    def eval_apply_fn(self, batch_stats: Any) -> Callable[[Any, jax.Array], jax.Array]:
        """``apply_fn(θ, x)`` in eval mode (running statistics): a per-example function of ``x``."""
        model = self.model

        def apply_fn(params: Any, x: jax.Array) -> jax.Array:
            return model.apply(_variables(params, batch_stats), x, train=False)

        return apply_fn

    def eval_objective(self, batch_stats: Any) -> Objective:
        """The eval-mode objective (used for curvature tracking)."""
        return Objective(self.eval_apply_fn(batch_stats), self.spec.loss)

    # ----------------------------------------------------------------------------------------
    # init and data order

    def init(self, keys: jax.Array) -> TrainState:
        """The initial state of the seeds with ``(S, 2)`` keys ``keys``.

        Each seed is initialised by the same compiled single-seed function and the results are
        stacked: compiling the ``vmap`` of a flax init (threefry draws for every layer) costs about
        three times as much on XLA's CPU backend, and the values are identical. The single-seed
        init is shared by every program with the same model.
        """
        keys = np.asarray(keys)
        seeds = [jax.device_get(self.functions.init_seed(key)) for key in keys]
        params, batch_stats, data_key, step_key = jax.tree.map(
            lambda *leaves: jax.device_put(np.stack(leaves)), *seeds
        )
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=jax.vmap(self.tx.init)(params),
            data_key=data_key,
            step_key=step_key,
            diverged_at=jnp.full((len(keys),), -1, jnp.int32),
        )

    def abstract_init(self, num_seeds: int) -> TrainState:
        """Shapes and dtypes of :meth:`init` for ``num_seeds`` seeds, computing nothing."""
        key = jax.ShapeDtypeStruct((2,), jnp.uint32)
        one = jax.eval_shape(self.functions._init_seed, key)
        params, batch_stats, data_key, step_key = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct((num_seeds, *leaf.shape), leaf.dtype), one
        )
        return TrainState(
            step=jax.ShapeDtypeStruct((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=jax.eval_shape(jax.vmap(self.tx.init), params),
            data_key=data_key,
            step_key=step_key,
            diverged_at=jax.ShapeDtypeStruct((num_seeds,), jnp.int32),
        )

    def epoch_block_size(self, num_seeds: int) -> int:
        """Epochs ``K`` per :meth:`epoch_block` call: all of them for small data, else fewer.

        One batched call per ``K`` epochs instead of one per epoch: a permutation's cost is mostly
        per-call overhead on small data (0.7 ms for 1,437 examples, 11 digits steps of 0.5 ms).
        """
        num_epochs = -(-self.spec.total_steps // self.spec.steps_per_epoch)
        per_epoch = num_seeds * self.spec.num_train
        return max(1, min(num_epochs, EPOCH_BLOCK_ELEMENTS // per_epoch))

    def epoch_block(
        self, data_keys: jax.Array, first_epoch: int, num_epochs: int
    ) -> tuple[jax.Array, jax.Array]:
        """Permutations ``(K, S, N)`` and augmentation keys ``(K, S, 2)`` of ``K`` epochs.

        Entry ``[k, s]`` is seed ``s``'s epoch ``first_epoch + k``, as
        :func:`nmelab.data.epoch_keys` and :func:`nmelab.data.epoch_permutation` define it.
        """
        return _EPOCH_BLOCK(self.spec.num_train, num_epochs, data_keys, first_epoch)

    def epoch_data(self, data_keys: jax.Array, epoch: int) -> tuple[jax.Array, jax.Array]:
        """Per-seed ``(permutation (S, N), augmentation key (S, 2))`` of epoch ``epoch``."""
        permutations, keys = self.epoch_block(data_keys, epoch, 1)
        return permutations[0], keys[0]

    # ----------------------------------------------------------------------------------------
    # the train step

    def _seed_step(
        self,
        params: Any,
        batch_stats: Any,
        opt_state: Any,
        step_key: jax.Array,
        diverged_at: jax.Array,
        acc: dict[str, jax.Array],
        reg: Any,
        batch: tuple[jax.Array, jax.Array],
        step: jax.Array,
    ) -> tuple[Any, ...]:
        reg_key, dropout_key = jax.random.split(jax.random.fold_in(step_key, step))
        objective = self.train_objective(batch_stats, dropout_key)
        (value, (logits, new_stats)), direction = reg.value_and_grad(
            objective, params, batch, reg_key
        )
        updates, new_opt_state = self.tx.update(direction, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        loss = self.loss_fn(logits, batch[1])
        finite = (
            jnp.isfinite(value)
            & jnp.isfinite(loss)
            & _tree_all_finite(new_params)
            & _tree_all_finite(new_stats)
        )
        alive = diverged_at < 0
        keep = finite & alive

        def select(new: Any, old: Any) -> Any:
            return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)

        weight = keep.astype(jnp.float32)
        acc = {
            "loss": acc["loss"] + jnp.where(keep, loss, 0.0),
            "objective": acc["objective"] + jnp.where(keep, value, 0.0),
            "accuracy": acc["accuracy"] + jnp.where(keep, _accuracy(logits, batch[1]), 0.0),
            "count": acc["count"] + weight,
            "lr": self.schedule(step).astype(jnp.float32),
        }
        return (
            select(new_params, params),
            select(new_stats, batch_stats),
            select(new_opt_state, opt_state),
            jnp.where(alive & ~finite, step.astype(diverged_at.dtype), diverged_at),
            acc,
        )

    def _vmapped_step(
        self,
        state: TrainState,
        acc: dict[str, jax.Array],
        reg: Any,
        batch_fn: Callable[..., tuple[jax.Array, jax.Array]],
        batch_args: tuple[Any, ...],
        batch_axes: tuple[Any, ...],
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """Apply one step to every seed; ``batch_fn(*batch_args)`` gives the seed's batch."""

        def one(params, stats, opt_state, step_key, diverged_at, acc, *args):
            # nmelab.parallel (issue 8): split the batch over the context mesh (no-op without one)
            batch = parallel.constrain_batch(batch_fn(*args))
            return self._seed_step(
                params, stats, opt_state, step_key, diverged_at, acc, reg, batch, state.step
            )

        args = (
            state.params,
            state.batch_stats,
            state.opt_state,
            state.step_key,
            state.diverged_at,
            acc,
            *batch_args,
        )
        in_axes = (0,) * 6 + batch_axes
        num_seeds = state.diverged_at.shape[0]
        if num_seeds == 1 or self.spec.seed_batching == "unroll":
            # One seed: drop the seed axis rather than vmap over a size-1 axis, which turns every
            # matmul into a batched one (measured 12 % slower on XLA's CPU backend for an MLP).
            # "unroll": the seeds' steps one after another (no grouped convolutions).
            def seed(i: int) -> list[Any]:
                return [
                    a if axis is None else jax.tree.map(lambda leaf: leaf[i], a)
                    for a, axis in zip(args, in_axes, strict=True)
                ]

            outputs = jax.tree.map(
                lambda *leaves: jnp.stack(leaves), *(one(*seed(i)) for i in range(num_seeds))
            )
        else:
            outputs = jax.vmap(one, in_axes=in_axes)(*args)
        params, stats, opt_state, diverged_at, acc = outputs
        state = state.replace(
            step=state.step + 1,
            params=params,
            batch_stats=stats,
            opt_state=opt_state,
            diverged_at=diverged_at,
        )
        return state, acc

    def _augment(self, x: jax.Array, augmentation_key: jax.Array, position: jax.Array) -> jax.Array:
        if not self.spec.augment:
            return x
        return nmedata.random_crop_flip(x, jax.random.fold_in(augmentation_key, position))

    def _train_step(
        self,
        state: TrainState,
        acc: dict[str, jax.Array],
        reg: Any,
        x_train: jax.Array,
        y_train: jax.Array,
        permutations: jax.Array,
        augmentation_keys: jax.Array,
        first_epoch: jax.Array | int = 0,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One step of every seed on the device-resident training set.

        At step ``t`` (epoch ``e = t // steps_per_epoch``, position ``p = t mod steps_per_epoch``)
        seed ``s`` trains on examples ``permutations[k, s, p·B : (p+1)·B]``, ``k = e -
        first_epoch``, augmented with ``fold_in(augmentation_keys[k, s], p)``.

        Args:
          state: the train state.
          acc: per-seed metric sums (:func:`nmelab.train.state.accumulator`).
          reg: the regularizer (a pytree).
          x_train: ``(N, ...)`` training inputs on the device.
          y_train: ``(N,)`` labels.
          permutations: ``(K, S, N)`` permutations of epochs ``first_epoch ...`` from
            :meth:`epoch_block` (or ``(S, N)`` for the current epoch alone).
          augmentation_keys: ``(K, S, 2)`` (or ``(S, 2)``) epoch augmentation keys.
          first_epoch: the epoch of ``permutations[0]``.
        """
        batch_size = self.spec.batch_size
        epoch, position = jnp.divmod(state.step, self.spec.steps_per_epoch)
        if permutations.ndim == 3:
            k = epoch - first_epoch
            permutations = jax.lax.dynamic_index_in_dim(permutations, k, keepdims=False)
            augmentation_keys = jax.lax.dynamic_index_in_dim(augmentation_keys, k, keepdims=False)

        def batch_fn(permutation: jax.Array, augmentation_key: jax.Array):
            idx = jax.lax.dynamic_slice_in_dim(permutation, position * batch_size, batch_size)
            x = jnp.take(x_train, idx, axis=0)
            y = jnp.take(y_train, idx, axis=0)
            return self._augment(x, augmentation_key, position), y

        return self._vmapped_step(
            state, acc, reg, batch_fn, (permutations, augmentation_keys), (0, 0)
        )

    def _train_batch(
        self,
        state: TrainState,
        acc: dict[str, jax.Array],
        reg: Any,
        x: jax.Array,
        y: jax.Array,
        augmentation_keys: jax.Array,
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One step on a host-fed batch ``(x, y)``, shared by the seeds (streaming data)."""
        position = state.step % self.spec.steps_per_epoch
        return self._vmapped_step(
            state,
            acc,
            reg,
            lambda xb, yb, key: (self._augment(xb, key, position), yb),
            (x, y, augmentation_keys),
            (None, None, 0),
        )


@functools.lru_cache(maxsize=16)
def make_program(spec: ProgramSpec) -> Program:
    """The (cached) :class:`Program` of ``spec``: equal specs share compiled functions."""
    return Program(spec)
