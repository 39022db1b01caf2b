"""Argument checks: every error names the argument, what was expected and what was given.

This module is the one home of nmelab's generic argument checks; library modules call these
instead of writing their own. Three groups:

* hyperparameters (Python scalars fixed when a function or object is built):
  :func:`check_number` (a finite real number, optionally bounded below), :func:`check_count`
  (an ``int`` ``>= minimum``) and :func:`check_choice` (one of a tuple of names);
* arrays and pytrees: :func:`check_finite`, :func:`check_params`, :func:`check_like`,
  :func:`batch_size`, :func:`check_examples` (inputs with at least one example, all finite);
* the ``(objective, params, batch)`` triple of the curvature entry points: :func:`check_batch`
  and :func:`check_targets`.

The trap: value checks (NaN/inf, label range) need concrete arrays. Under
``jit``/``vmap``/``grad`` the inputs are tracers, and only structure, shape and dtype are checked;
:func:`is_concrete` tells which case applies. An empty batch (leading size 0) is refused in both
cases, because its size is part of the shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nmelab.types import Params

__all__ = [
    "batch_size",
    "check_batch",
    "check_choice",
    "check_count",
    "check_examples",
    "check_finite",
    "check_like",
    "check_number",
    "check_params",
    "check_targets",
    "is_concrete",
    "leaf_paths",
]


def is_concrete(x: Any) -> bool:
    """Whether ``x`` holds values (not a tracer inside ``jit``/``vmap``/``grad``)."""
    return not isinstance(x, jax.core.Tracer)


def leaf_paths(tree: Any) -> list[tuple[str, Any]]:
    """``[(path, leaf)]`` with ``path`` as :func:`jax.tree_util.keystr` writes it (``"[0]['w']"``)."""
    paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in paths]


# --------------------------------------------------------------------------------------------
# hyperparameters
# --------------------------------------------------------------------------------------------


def check_number(
    value: Any, name: str, *, minimum: float | None = None, strict: bool = False
) -> float:
    """Require a concrete finite real scalar, bounded below; return it as a Python float.

    Bools are refused (``True`` is not a number here). The bound is ``value >= minimum``, or
    ``value > minimum`` with ``strict``; ``minimum=None`` checks only finiteness.

    Raises:
      TypeError: ``value`` is traced (a hyperparameter must be fixed when the function is built),
        a bool, a string or not a real scalar.
      ValueError: ``value`` is NaN/inf or below the bound.
    """
    bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{name} must be a concrete Python number (a hyperparameter, validated and fixed when "
            f"the function is built), got a traced value {value!r}; close over {name} instead of "
            "passing it through jit/vmap/grad"
        )
    try:
        arr = np.asarray(value)
    except Exception as err:
        raise TypeError(f"{name} must be a real number{bound}, got {value!r}") from err
    if isinstance(value, bool) or arr.ndim != 0 or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real number{bound}, got {value!r}")
    number = float(arr)
    too_small = minimum is not None and (number <= minimum if strict else number < minimum)
    if not math.isfinite(number) or too_small:
        raise ValueError(f"{name} must be a finite number{bound}, got {number!r}")
    return number


def check_count(value: Any, name: str, minimum: int = 1) -> int:
    """Require a Python or numpy integer (not a bool) ``>= minimum``; return it as an ``int``.

    Raises:
      TypeError: ``value`` is not an integer (``2.0`` is refused: counts are never rounded).
      ValueError: ``value < minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """Require ``value`` to be one of the strings ``choices``; return it.

    Raises:
      ValueError: naming the valid choices and what was given.
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# arrays and pytrees
# --------------------------------------------------------------------------------------------


def check_finite(tree: Any, name: str) -> None:
    """Require every concrete numeric leaf of ``tree`` to be free of NaN and inf.

    Tracers are skipped, and so are arrays spread over several processes (not fully addressable),
    whose values no single process holds. A device array is tested on its device (one scalar comes
    back to the host), so a large batch is not copied.

    Raises:
      ValueError: naming the first bad leaf's path, its shape, how many NaN and inf it holds and
        the index of the first one.
    """
    for path, leaf in leaf_paths(tree):
        if not is_concrete(leaf) or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            continue
        if isinstance(leaf, jax.Array):
            if not leaf.is_fully_addressable:
                continue
            with jax.ensure_compile_time_eval():  # a concrete leaf met while tracing: no staging
                if bool(jnp.all(jnp.isfinite(leaf))):
                    continue
        elif np.all(np.isfinite(leaf)):
            continue
        values = np.asarray(leaf)
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise ValueError(
            f"{name}{path} contains NaN or inf, must be finite: found "
            f"{int(np.isnan(values).sum())} NaN and {int(np.isinf(values).sum())} inf among its "
            f"{values.size} values (shape {values.shape}, first at index {first})"
        )


def check_params(params: Params, name: str = "params") -> None:
    """Require floating-point leaves, and finite values where concrete.

    Raises:
      TypeError: if a leaf is not a floating-point array.
      ValueError: if ``params`` has no leaves, or a concrete leaf holds NaN or inf (the leaf's path
        is named).
    """
    leaves = leaf_paths(params)
    if not leaves:
        raise ValueError(f"{name} has no array leaves")
    for path, leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name}{path} must be a floating-point array, got dtype {dtype}; "
                "curvature is only defined for real-valued parameters"
            )
    check_finite(params, name)


def check_like(v: Any, params: Params, name: str = "v") -> None:
    """Require ``v`` to have the tree structure and leaf shapes of ``params``.

    Raises:
      ValueError: naming the first mismatch.
    """
    v_def = jax.tree_util.tree_structure(v)
    p_def = jax.tree_util.tree_structure(params)
    if v_def != p_def:
        raise ValueError(
            f"{name} must have the tree structure of params; expected {p_def}, got {v_def}"
        )
    for (path, v_leaf), (_, p_leaf) in zip(leaf_paths(v), leaf_paths(params), strict=True):
        if jnp.shape(v_leaf) != jnp.shape(p_leaf):
            raise ValueError(
                f"{name}{path} must have shape {jnp.shape(p_leaf)} like params{path}, "
                f"got {jnp.shape(v_leaf)}"
            )


def batch_size(x: Any, name: str = "x") -> int:
    """The leading-axis size shared by every leaf of ``x``.

    Raises:
      ValueError: ``x`` has no leaves, a scalar leaf, or leaves of different leading sizes.
    """
    leaves = leaf_paths(x)
    if not leaves:
        raise ValueError(f"{name} has no array leaves")
    sizes = {path: jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for path, leaf in leaves}
    if any(s is None for s in sizes.values()):
        raise ValueError(f"{name} must have a leading batch axis, got scalar leaves")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every leaf of {name} must share the batch size, got {sizes}")
    return next(iter(sizes.values()))


# --------------------------------------------------------------------------------------------
# the batch of a curvature entry point
# --------------------------------------------------------------------------------------------


def check_batch(batch: Any) -> tuple[Any, Any]:
    """Require ``batch == (x, y)`` with matching, non-zero leading sizes and finite inputs.

    nmelab's losses, and so every curvature matrix of paper eq. 2, are means over the batch, so an
    empty batch has no curvature: its loss is NaN while the matrix-free products return zeros, a silent wrong answer.
    NaN or inf in ``x`` (or in float targets ``y``) makes the products NaN. Both are refused here;
    finiteness is checked only where the arrays are concrete (under ``jit`` it is skipped, see the
    module docstring).

    Raises:
      ValueError: ``batch`` is not a pair, ``x`` and ``y`` differ in size, the batch is empty, or a
        concrete ``x`` or ``y`` holds NaN or inf (naming the leaf, its shape and what was found).
    """
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise ValueError(f"batch must be a pair (x, y), got {type(batch).__name__}")
    x, y = batch
    n_x, n_y = batch_size(x, "batch x"), batch_size(y, "batch y")
    if n_x != n_y:
        raise ValueError(
            f"batch x and y must have the same size, got {n_x} inputs and {n_y} targets"
        )
    check_examples(x, "batch x")
    check_finite(y, "batch y")
    return x, y


def check_examples(x: Any, name: str = "x") -> int:
    """Require inputs ``x`` with at least one example and, where concrete, no NaN or inf.

    Returns:
      The batch size ``N >= 1``.

    Raises:
      ValueError: ``x`` has no leading batch axis, is empty (size 0) or holds NaN/inf.
    """
    num = batch_size(x, name)
    if num == 0:
        shapes = [jnp.shape(leaf) for leaf in jax.tree.leaves(x)]
        raise ValueError(
            f"{name} is empty (leading size 0, shapes {shapes}); the loss and every curvature "
            "matrix are means over the batch and need at least one example"
        )
    check_finite(x, name)
    return num


def check_targets(outputs_shape: tuple[int, ...], y: Any, loss: str) -> None:
    """Check targets against the model's output shape for the built-in losses.

    Integer labels must be ``(N,)`` with values in ``[0, K)``; float targets must match the outputs'
    shape. Custom callable losses are not checked.

    Raises:
      ValueError: naming the shape or range that was expected and what was given.
    """
    if not isinstance(loss, str):
        return
    y_shape, y_dtype = jnp.shape(y), jnp.result_type(y)
    if jnp.issubdtype(y_dtype, jnp.integer):
        if len(outputs_shape) != 2:
            raise ValueError(
                f"integer labels need (N, K) outputs for loss {loss!r}, got outputs {outputs_shape}"
            )
        num, classes = outputs_shape
        if y_shape != (num,):
            raise ValueError(f"labels y must have shape ({num},), got {y_shape}")
        if is_concrete(y):
            y_np = np.asarray(y)
            if y_np.size and (y_np.min() < 0 or y_np.max() >= classes):
                raise ValueError(
                    f"labels y must lie in [0, {classes}) for {classes} outputs, "
                    f"got values in [{y_np.min()}, {y_np.max()}]"
                )
    elif y_shape != tuple(outputs_shape):
        raise ValueError(
            f"float targets y must have the outputs' shape {tuple(outputs_shape)}, got {y_shape}"
        )
