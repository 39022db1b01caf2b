"""The train state: every seed's parameters, BatchNorm statistics, optimizer state and keys.

All leaves except ``step`` carry a leading *seed axis* of size ``S = config.num_seeds``: seed
``i`` is an independent run with its own initialisation and its own data order, and one compiled
train step advances every seed (``jax.vmap`` over the axis, or the seeds unrolled one after
another: ``config.seed_batching``). The state is a pytree (a ``flax.struct`` dataclass) so it can be
passed through ``jit``, donated, and saved by Orbax as is.

Keys are raw ``uint32`` keys (``jax.random.PRNGKey`` layout), not typed keys, so that a checkpoint
stores them as plain arrays.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class TrainState:
    """State of ``S`` runs trained side by side.

    Attributes:
      step: ``()`` int32, optimizer steps taken (shared by the seeds).
      params: the model parameters, each leaf ``(S, ...)``.
      batch_stats: BatchNorm running statistics ``(S, ...)``; ``{}`` for models without BN.
      opt_state: the optax state, leaves ``(S, ...)``.
      data_key: ``(S, 2)`` uint32, drives the data order and augmentation of each seed: epoch ``e``
        uses :func:`nmelab.data.epoch_keys` ``(data_key, e)``.
      step_key: ``(S, 2)`` uint32; step ``t`` draws the regularizer's noise (and dropout) from
        ``fold_in(step_key, t)``.
      diverged_at: ``(S,)`` int32, ``-1`` while the seed is finite, else the ``step`` whose update
        produced a NaN or inf. A diverged seed keeps its last finite state (it is frozen).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    data_key: jax.Array
    step_key: jax.Array
    diverged_at: jax.Array

    @property
    def num_seeds(self) -> int:
        """The size ``S`` of the seed axis."""
        return int(self.diverged_at.shape[0])


def seed_keys(seed: int, num_seeds: int) -> np.ndarray:
    """``(S, 2)`` uint32 keys ``PRNGKey(seed + i)``: seed ``i`` of a multi-seed run is run ``seed + i``."""
    return np.stack([np.asarray(jax.random.PRNGKey(seed + i)) for i in range(num_seeds)])


def split_seed_key(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Split one seed's key into ``(init_key, data_key, step_key)``."""
    init_key, data_key, step_key = jax.random.split(key, 3)
    return init_key, data_key, step_key


def accumulator(num_seeds: int) -> dict[str, jax.Array]:
    """Zeroed per-seed sums of the training metrics between two log steps (and the last lr)."""
    names = ("loss", "objective", "accuracy", "count", "lr")
    # jnp.zeros (not a device_put of numpy) so that under an active mesh (nmelab.parallel) the sums
    # are global arrays that Orbax can checkpoint in a multi-host run
    return {name: jnp.zeros((num_seeds,), jnp.float32) for name in names}
