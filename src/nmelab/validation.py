"""Input checks with errors that name the argument, the expectation and what was given.

Value checks (NaN, label range) run only on concrete arrays: under ``jit`` the inputs are tracers
and only structure, shape and dtype can be checked.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nmelab.types import Params


def is_concrete(x: Any) -> bool:
    """Whether ``x`` holds values (not a tracer inside ``jit``/``vmap``/``grad``)."""
    return not isinstance(x, jax.core.Tracer)


def _leaf_names(tree: Any) -> list[tuple[str, Any]]:
    paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path) or "<root>", leaf) for path, leaf in paths]


def check_params(params: Params, name: str = "params") -> None:
    """Require floating-point leaves, and finite values where concrete.

    Raises:
      TypeError: if a leaf is not a floating-point array.
      ValueError: if a concrete leaf holds NaN or inf (the leaf's path is named).
    """
    leaves = _leaf_names(params)
    if not leaves:
        raise ValueError(f"{name} has no array leaves")
    for path, leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name}{path} must be a floating-point array, got dtype {dtype}; "
                "curvature is only defined for real-valued parameters"
            )
        if is_concrete(leaf) and not bool(np.all(np.isfinite(np.asarray(leaf)))):
            raise ValueError(f"{name}{path} contains NaN or inf")


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
    for (path, v_leaf), (_, p_leaf) in zip(_leaf_names(v), _leaf_names(params), strict=True):
        if jnp.shape(v_leaf) != jnp.shape(p_leaf):
            raise ValueError(
                f"{name}{path} must have shape {jnp.shape(p_leaf)} like params{path}, "
                f"got {jnp.shape(v_leaf)}"
            )


def batch_size(x: Any, name: str = "x") -> int:
    """The leading-axis size shared by every leaf of ``x``."""
    sizes = {path: jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for path, leaf in _leaf_names(x)}
    if any(s is None for s in sizes.values()):
        raise ValueError(f"{name} must have a leading batch axis, got scalar leaves")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every leaf of {name} must share the batch size, got {sizes}")
    return next(iter(sizes.values()))


def check_batch(batch: Any) -> tuple[Any, Any]:
    """Require ``batch == (x, y)`` with matching leading sizes; return ``(x, y)``.

    Raises:
      ValueError: if batch is not a pair or x and y differ in size.
    """
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise ValueError(f"batch must be a pair (x, y), got {type(batch).__name__}")
    x, y = batch
    n_x, n_y = batch_size(x, "batch x"), batch_size(y, "batch y")
    if n_x != n_y:
        raise ValueError(
            f"batch x and y must have the same size, got {n_x} inputs and {n_y} targets"
        )
    return x, y


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
