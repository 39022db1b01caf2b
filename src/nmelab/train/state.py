"""The train state of one seed, and the same state for ``S`` seeds stacked on a leading axis.

:func:`nmelab.train.train_step` sees one seed: every field below without a seed axis. The trainer
keeps ``S = config.num_seeds`` seeds side by side and stacks them: every leaf except ``step`` (which
the seeds share) gets a leading axis of size ``S``, and :func:`nmelab.train.seeds.over_seeds` maps a
single-seed function over it. Seed ``i`` is an independent run with its own initialisation and data
order. Checkpoints always hold the stacked state (``S = 1`` included).

The state is a pytree (a ``flax.struct`` dataclass): it passes through ``jit``, is donated, and
Orbax saves it as is. Keys are raw ``uint32`` keys (``jax.random.PRNGKey`` layout), not typed keys,
so a checkpoint stores them as plain arrays.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["METRICS", "TrainState", "seed_axes", "seed_keys", "split_seed_key", "zero_metrics"]


@flax.struct.dataclass
class TrainState:
    """The state of one run (or of ``S`` runs stacked, see the module docstring).

    Attributes:
      step: ``()`` int32, optimizer steps taken (shared by stacked seeds).
      params: the model parameters.
      batch_stats: BatchNorm running statistics; ``{}`` for models without BN.
      opt_state: the optax state.
      data_key: ``(2,)`` uint32, drives the data order and augmentation: epoch ``e`` uses
        :func:`nmelab.data.epoch_keys` ``(data_key, e)``.
      step_key: ``(2,)`` uint32; step ``t`` draws the regularizer's noise (and dropout) from
        ``fold_in(step_key, t)``.
      diverged_at: ``()`` int32, ``-1`` while the run is finite, else the ``step`` whose update
        produced a NaN or inf. A diverged run keeps its last finite state (it is frozen).
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
        """The size ``S`` of the seed axis of a stacked state."""
        return int(self.diverged_at.shape[0])

    def seed(self, i: int) -> TrainState:
        """Seed ``i`` of a stacked state: every leaf without its seed axis."""
        stacked = self.replace(step=None)
        return jax.tree.map(lambda leaf: leaf[i], stacked).replace(step=self.step)


def seed_axes() -> TrainState:
    """The ``in_axes``/``out_axes`` of a stacked state: axis 0 everywhere but ``step``."""
    return TrainState(
        step=None, params=0, batch_stats=0, opt_state=0, data_key=0, step_key=0, diverged_at=0
    )


def seed_keys(seed: int, num_seeds: int) -> np.ndarray:
    """``(S, 2)`` uint32 keys ``PRNGKey(seed + i)``: seed ``i`` of a multi-seed run is run ``seed + i``."""
    return np.stack([np.asarray(jax.random.PRNGKey(seed + i)) for i in range(num_seeds)])


def split_seed_key(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Split one seed's key into ``(init_key, data_key, step_key)``."""
    init_key, data_key, step_key = jax.random.split(key, 3)
    return init_key, data_key, step_key


METRICS = ("loss", "objective", "accuracy", "count", "lr")
"""The training metrics summed between two log steps (``lr`` is the last value, not a sum)."""


def zero_metrics(num_seeds: int) -> dict[str, jax.Array]:
    """Zeroed per-seed sums of :data:`METRICS` (``(S,)`` float32 each)."""
    # jnp.zeros (not a device_put of numpy): with a mesh the sums are global arrays that Orbax
    # can checkpoint in a multi-host run
    return {name: jnp.zeros((num_seeds,), jnp.float32) for name in METRICS}
