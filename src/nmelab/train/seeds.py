"""Several seeds in one compiled program: ``jax.vmap`` where it pays, an unrolled loop elsewhere.

:func:`over_seeds` turns a single-seed function (e.g. :func:`nmelab.train.train_step`) into one
over ``S`` stacked seeds. Two ways, the same values up to float rounding:

* ``"vmap"``: one batched program. An MLP's matmuls become batched matmuls, about 25 % faster for
  3 digits seeds on XLA's CPU backend.
* ``"unroll"``: the seeds' computations one after another in the same program. ``vmap`` turns a
  convolution with per-seed kernels into a grouped convolution, which XLA's CPU backend runs 2-3
  times slower than the seeds one by one (1D CNNs on MNIST-1D, 3 seeds).

One seed is always unrolled: a ``vmap`` over a size-1 axis turns every matmul into a batched one
(12 % slower for an MLP on CPU) and gains nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["SEED_BATCHING", "over_seeds", "resolve_seed_batching"]

SEED_BATCHING = ("auto", "vmap", "unroll")


def resolve_seed_batching(mode: str, param_shapes: Any) -> str:
    """``"vmap"`` or ``"unroll"`` for ``config.seed_batching``; ``"auto"`` decides by model.

    ``"auto"`` unrolls a convolutional model (a parameter of rank >= 3) on the CPU backend and
    vmaps otherwise (see the module docstring for the measurements).

    Raises:
      ValueError: an unknown mode.
    """
    if mode not in SEED_BATCHING:
        raise ValueError(f"config.seed_batching: expected one of {SEED_BATCHING}, got {mode!r}")
    if mode != "auto":
        return mode
    convolutional = any(len(leaf.shape) >= 3 for leaf in jax.tree.leaves(param_shapes))
    return "unroll" if convolutional and jax.default_backend() == "cpu" else "vmap"


def _is_axis(x: Any) -> bool:
    return x is None or isinstance(x, int)


def over_seeds(
    fn: Callable[..., Any], num_seeds: int, mode: str, in_axes: tuple[Any, ...], out_axes: Any
) -> Callable[..., Any]:
    """``fn`` of one seed mapped over ``num_seeds`` stacked seeds (``"vmap"`` or ``"unroll"``).

    Args:
      fn: a single-seed function.
      num_seeds: the size ``S`` of the seed axis.
      mode: ``"vmap"`` or ``"unroll"`` (:func:`resolve_seed_batching`).
      in_axes: one entry per argument, a pytree prefix of it: ``0`` (seed axis first) or ``None``
        (shared by the seeds), as for ``jax.vmap``.
      out_axes: the same for the output.
    """
    if mode == "vmap" and num_seeds > 1:
        return jax.vmap(fn, in_axes=in_axes, out_axes=out_axes)

    def seed(args: tuple[Any, ...], i: int) -> tuple[Any, ...]:
        def take(axis: Any, arg: Any) -> Any:
            return arg if axis is None else jax.tree.map(lambda leaf: leaf[i], arg)

        return jax.tree.map(take, in_axes, args, is_leaf=_is_axis)

    def unrolled(*args: Any) -> Any:
        outputs = [fn(*seed(args, i)) for i in range(num_seeds)]

        def stack(axis: Any, *parts: Any) -> Any:
            if axis is None:
                return parts[0]
            return jax.tree.map(lambda *leaves: jnp.stack(leaves), *parts)

        return jax.tree.map(stack, out_axes, *outputs, is_leaf=_is_axis)

    return unrolled
