"""Orbax checkpoints of a run: the train state, the metric sums in flight, and host bookkeeping.

A checkpoint lives in ``<workdir>/checkpoints/<step>/`` and holds three items:

* ``state`` - the stacked :class:`~nmelab.train.state.TrainState` (every seed), saved and restored
  bitwise;
* ``acc`` - the per-seed metric sums since the last log step, so the resumed run logs the same
  numbers as the uninterrupted one;
* ``meta`` - JSON: the step, elapsed time and timing counters.

Saving is synchronous (``enable_async_checkpointing=False``): a checkpoint is complete on disk when
:meth:`Checkpointer.save` returns. Orbax writes into a temporary folder and renames it when done,
so a run killed mid-save leaves the previous checkpoint as the newest one.

A checkpoint is *verified* when restored: Orbax must read every item into the expected structure,
shapes and dtypes, and the restored state's step and the meta's step must both equal the folder's
step. :meth:`Checkpointer.restore_newest_good` walks from the newest checkpoint to the oldest; a
damaged one (random bytes, a deleted item, a truncated file) is reported with a warning naming its
folder and the reason and, when ``set_aside``, renamed to ``<workdir>/checkpoints.damaged/<step>``
(never deleted), so the next rerun does not trip over it again.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpointer"]


class Checkpointer:
    """A thin wrapper over ``orbax.checkpoint.CheckpointManager`` for one workdir.

    Args:
      workdir: the run's folder; checkpoints go to ``<workdir>/checkpoints``.
      max_to_keep: checkpoints kept (older ones are deleted by Orbax).
      create: create the folder (``False`` for read-only use, e.g. analysis).
    """

    def __init__(self, workdir: str | Path, max_to_keep: int = 2, create: bool = True):
        self.directory = Path(workdir).absolute() / "checkpoints"
        self.damaged_directory = self.directory.with_name("checkpoints.damaged")
        self.max_to_keep = max(1, max_to_keep)
        self.create = create
        self.manager = self._manager()

    def _manager(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=self.max_to_keep,
                create=self.create,
                enable_async_checkpointing=False,
            ),
            item_names=("state", "acc", "meta"),
        )

    def all_steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self.manager.all_steps()) if self.directory.is_dir() else []

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

    def restore(self, step: int, state_like: Any, acc_like: Any) -> tuple[Any, Any, dict[str, Any]]:
        """Restore and verify ``(state, acc, meta)`` of ``step``.

        Args:
          step: the step to restore.
          state_like: a state (or ``jax.ShapeDtypeStruct`` tree) with the expected structure.
          acc_like: the same for the metric sums.

        Raises:
          ValueError: ``step`` has no checkpoint, or it cannot be read or fails verification
            (the message names the folder and the reason).
        """
        folder = self.directory / str(step)
        if step not in self.all_steps():
            raise ValueError(
                f"{folder}: no checkpoint of step {step} (steps present: {self.all_steps()})"
            )
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, (state_like, acc_like))
        try:
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract[0]),
                    acc=ocp.args.StandardRestore(abstract[1]),
                    meta=ocp.args.JsonRestore(),
                ),
            )
            meta = dict(restored.meta)
            state_step = int(np.asarray(restored.state.step))
        except Exception as err:  # Orbax raises many types for damaged files
            raise ValueError(
                f"{folder}: unreadable checkpoint ({type(err).__name__}: {err})"
            ) from err
        if state_step != step or meta.get("step") != step:
            raise ValueError(
                f"{folder}: inconsistent checkpoint (state step {state_step}, "
                f"meta step {meta.get('step')!r}, folder step {step})"
            )
        return restored.state, restored.acc, meta

    def restore_newest_good(
        self, state_like: Any, acc_like: Any, *, set_aside: bool
    ) -> tuple[Any, Any, dict[str, Any]] | None:
        """Restore the newest checkpoint that verifies; ``None`` when there is none at all.

        Each damaged checkpoint newer than the one restored gets a warning (folder and reason) and,
        with ``set_aside``, is moved to ``checkpoints.damaged/<step>``.

        Raises:
          ValueError: checkpoints exist but none verifies (naming the folder, each reason, and
            how to start fresh); nothing is moved then.
        """
        steps = self.all_steps()
        if not steps:
            return None
        reasons = []
        for step in reversed(steps):
            try:
                restored = self.restore(step, state_like, acc_like)
            except ValueError as err:
                reasons.append(str(err))
                continue
            for reason in reasons:
                warnings.warn(f"skipping a damaged checkpoint: {reason}", stacklevel=2)
            if set_aside:
                self._set_aside([s for s in steps if s > step])
            return restored
        raise ValueError(
            f"{self.directory}: no readable checkpoint ({'; '.join(reasons)}). To start the run "
            f"afresh, move or delete {self.directory} and rerun (its logs are then redone from "
            "step 0)"
        )

    def _set_aside(self, steps: list[int]) -> None:
        if not steps:
            return
        self.damaged_directory.mkdir(exist_ok=True)
        for step in steps:
            target = self.damaged_directory / str(step)
            suffix = 1
            while target.exists():
                target = self.damaged_directory / f"{step}.{suffix}"
                suffix += 1
            (self.directory / str(step)).rename(target)
            warnings.warn(
                f"moved the damaged checkpoint {self.directory / str(step)} to {target}",
                stacklevel=3,
            )
        self.manager.close()
        self.manager = self._manager()

    def close(self) -> None:
        """Release the manager."""
        self.manager.close()
