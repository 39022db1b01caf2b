"""How the iterative estimators loop over operator products: one compiled loop, or a Python loop.

XLA's CPU backend runs a convolution inside a while loop (``lax.scan``, ``lax.map``,
``fori_loop``) 20-50 times slower than the same convolution at the top level of a program: one
linearized Hessian-vector product of a small CNN (2 conv + 2 dense, 32×32×3, batch 128) took
1.3 gradients as its own program and 45 gradients inside ``lax.scan``. Every estimator therefore
has two drivers, chosen by its ``loop`` argument:

* ``"compiled"``: the whole estimator is one ``jax.jit`` program; products run in ``lax.scan`` /
  ``lax.map``. Best for MLPs (no per-step dispatch, and XLA fuses across steps).
* ``"python"``: the estimator body runs eagerly, the operator is linearized once by a jitted call,
  and the loop is a Python ``for`` over *one* jitted step (compiled once, called ``n`` times with
  the linearization's residuals as arguments), so every convolution is top level.
* ``"auto"`` (the default): ``"python"`` for a convolutional model (a parameter of rank >= 3) on the
  CPU backend, ``"compiled"`` otherwise, the rule the trainer uses for its steps.

Both drivers run the same step functions on the same keys, so they agree to rounding. A step is a
module-level function ``step(static, context, ...)``: ``static`` is hashable configuration, and
``context`` a pytree of arrays (an operator, params, a batch) passed as an argument, never closed
over, so the jitted step is compiled once per shape and reused across calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp

from nmelab.estimators import probes
from nmelab.types import PyTree

__all__ = ["LOOPS", "call", "convolutional", "driver", "map_chunks", "scan", "use_python_loop"]

LOOPS: tuple[str, ...] = ("auto", "compiled", "python")


def convolutional(params: PyTree) -> bool:
    """Whether ``params`` hold a convolution kernel (a leaf of rank >= 3)."""
    return any(len(jnp.shape(leaf)) >= 3 for leaf in jax.tree.leaves(params))


def use_python_loop(loop: Any, params: PyTree) -> bool:
    """Resolve ``loop`` (``"auto"``, ``"compiled"`` or ``"python"``) for a model's ``params``.

    Raises:
      ValueError: for any other value, naming the choices.
    """
    if not isinstance(loop, str) or loop not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(map(repr, LOOPS))}, got {loop!r}")
    if loop == "auto":
        return convolutional(params) and jax.default_backend() == "cpu"
    return loop == "python"


def driver(static_argnums: tuple[int, ...]) -> Callable[[Callable], Callable]:
    """Decorate an estimator body ``body(*args, python)`` (``python`` last, a bool).

    The decorated function runs ``jax.jit(body)`` (the ``static_argnums`` and ``python`` static)
    when ``python`` is false, and ``body`` eagerly when it is true: its loops then go through
    :func:`map_chunks` / :func:`scan` as Python loops over jitted steps.
    """

    def decorate(body: Callable) -> Callable:
        @functools.wraps(body)
        def run(*args: Any) -> Any:
            *rest, python = args
            if python:
                return body(*args)
            jitted = _jit(body, (*static_argnums, len(rest)))
            return jitted(*args)

        return run

    return decorate


@functools.cache
def _jit(fn: Callable, static_argnums: tuple[int, ...], donate_argnums: tuple[int, ...] = ()):
    return jax.jit(fn, static_argnums=static_argnums, donate_argnums=donate_argnums)


def _chunk_step(fn: Callable, static: Hashable, context: PyTree, chunk: PyTree) -> PyTree:
    if jax.tree.leaves(chunk)[0].shape[0] == 1:
        item = jax.tree.map(lambda x: x[0], chunk)
        return jax.tree.map(lambda y: y[None], fn(static, context, item))
    return jax.vmap(lambda item: fn(static, context, item))(chunk)


def call(fn: Callable, static: Hashable, context: PyTree, python: bool) -> PyTree:
    """``fn(static, context)``: as one jitted call in the Python driver, inline otherwise."""
    if python:
        return _jit(fn, (0,))(static, context)
    return fn(static, context)


def map_chunks(
    fn: Callable,
    static: Hashable,
    context: PyTree,
    xs: PyTree,
    num: int,
    batch_size: int,
    python: bool,
) -> PyTree:
    """``[fn(static, context, xs[i]) for i < num]`` stacked, ``batch_size`` items per ``vmap``.

    Compiled: :func:`nmelab.estimators.probes.chunked_map` (``lax.map`` over chunks; call inside
    ``jit``). Python: a loop over chunks, each one call of a jitted, ``vmap``-ed step (a final
    shorter chunk compiles once more).
    """
    if not python:
        return probes.chunked_map(lambda x: fn(static, context, x), xs, num, batch_size)
    step = _jit(_chunk_step, (0, 1))
    outs = [
        step(fn, static, context, jax.tree.map(lambda x, s=start: x[s : s + batch_size], xs))
        for start in range(0, num, batch_size)
    ]
    return jax.tree.map(lambda *parts: jnp.concatenate(parts), *outs)


def scan(
    fn: Callable,
    static: Hashable,
    context: PyTree,
    carry: PyTree,
    xs: PyTree,
    python: bool,
) -> tuple[PyTree, PyTree]:
    """``lax.scan`` of ``(carry, x) -> fn(static, context, carry, x)`` over the leading axis of ``xs``.

    Python: a loop calling the jitted step once per ``x``, with the carry donated (updated in
    place where the backend supports it); the initial ``carry`` must not be used afterwards.
    ``ys`` are stacked; ``fn`` may return ``None`` for them.
    """
    if not python:
        return jax.lax.scan(lambda c, x: fn(static, context, c, x), carry, xs)
    step = _jit(fn, (0,), (2,))
    ys = []
    for i in range(jax.tree.leaves(xs)[0].shape[0]):
        carry, y = step(static, context, carry, jax.tree.map(lambda x, i=i: x[i], xs))
        ys.append(y)
    if all(y is None for y in ys):
        return carry, None
    return carry, jax.tree.map(lambda *parts: jnp.stack(parts), *ys)
