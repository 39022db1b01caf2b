"""Shared timing helpers for the benchmark scripts: interleaved medians, ratios to a baseline."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 15) -> dict[str, float]:
    """Median wall time (s) of each zero-argument function, run round-robin so noise is shared.

    Each function is called once first to compile; results are blocked on.
    """
    for fn in fns.values():
        jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in samples.items()}


def peak_bytes(fn: Callable, *args) -> int:
    """Temporary plus output bytes of the compiled program (XLA's memory analysis)."""
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    """Print a plain fixed-width table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
