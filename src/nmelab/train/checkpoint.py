"""Orbax checkpoints of a run: the train state, the metric sums in flight, and host bookkeeping.

A checkpoint lives in ``<workdir>/checkpoints/<step>/`` and holds three items:

* ``state`` - the :class:`~nmelab.train.state.TrainState` (every seed), saved and restored bitwise;
* ``acc`` - the per-seed metric sums since the last log step, so the resumed run logs the same
  numbers as the uninterrupted one;
* ``meta`` - JSON: elapsed time and counters.

Saving is synchronous (``enable_async_checkpointing=False``): a checkpoint is complete on disk when
:func:`save` returns. Orbax writes into a temporary folder and renames it when done, so a run killed
mid-save leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """A thin wrapper over ``orbax.checkpoint.CheckpointManager`` for one workdir."""

    def __init__(self, workdir: str | Path, max_to_keep: int = 2):
        self.directory = Path(workdir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max(1, max_to_keep),
                create=True,
                enable_async_checkpointing=False,
            ),
            item_names=("state", "acc", "meta"),
        )

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or ``None``."""
        return self.manager.latest_step()

    def save(self, step: int, state: Any, acc: Any, meta: dict[str, Any]) -> None:
        """Save a checkpoint at ``step`` (overwrites nothing: an existing step is skipped)."""
        if step in self.manager.all_steps():
            return
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                acc=ocp.args.StandardSave(acc),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        self.manager.wait_until_finished()

    def restore(
        self, state_like: Any, acc_like: Any, step: int | None = None
    ) -> tuple[Any, Any, dict[str, Any]]:
        """Restore ``(state, acc, meta)`` of ``step`` (default: the latest).

        Args:
          state_like: a state (or ``jax.ShapeDtypeStruct`` tree) with the expected structure.
          acc_like: the same for the metric sums.
          step: the step to restore.

        Raises:
          FileNotFoundError: no checkpoint.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {str(self.directory)!r}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, (state_like, acc_like))
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract[0]),
                acc=ocp.args.StandardRestore(abstract[1]),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored.state, restored.acc, dict(restored.meta)

    def close(self) -> None:
        """Release the manager."""
        self.manager.close()
