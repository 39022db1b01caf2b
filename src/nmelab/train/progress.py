"""A rich progress bar for the training loop (on only when stderr is a terminal)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["Progress"]


class Progress:
    """Shows step, loss, accuracy and speed; every method is a no-op when disabled."""

    def __init__(self, enabled: bool, total: int, start: int, description: str):
        self.bar = None
        if not (enabled and sys.stderr.isatty()):
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        self.bar = RichProgress(
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
        """Show ``step`` and, when given, the per-seed ``loss`` and ``acc`` and the ``speed``."""
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
        """Stop the bar."""
        if self.bar is not None:
            self.bar.stop()
