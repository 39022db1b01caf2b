"""Pytree arithmetic and random pytrees: the one home of norms, normalisation and probes.

Every estimator, regularizer and diagnostic that needs ``‖v‖``, ``v / ‖v‖`` or a random
direction shaped like the parameters calls these, so the guards below (``v = 0``) and the
per-leaf key convention live in one place.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nmelab.types import Key, PyTree

__all__ = [
    "tree_vdot",
    "tree_sq_norm",
    "tree_norm",
    "tree_normalize",
    "tree_add_scaled",
    "random_like",
    "key_name",
    "layer_names",
]


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """``⟨a, b⟩`` summed over every leaf (real part)."""
    return sum(
        jnp.vdot(x, y).real for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def tree_sq_norm(tree: PyTree) -> jax.Array:
    """``‖v‖²`` summed over every leaf."""
    return tree_vdot(tree, tree)


def tree_norm(tree: PyTree) -> jax.Array:
    """``‖v‖``, the Euclidean norm over all leaves."""
    return jnp.sqrt(tree_sq_norm(tree))


def tree_normalize(tree: PyTree) -> tuple[PyTree, jax.Array]:
    """Return ``(v / ‖v‖, ‖v‖)`` with ``v / ‖v‖ := 0`` at ``v = 0``.

    The guard sits on the divisor, not on the result, so neither the value nor any derivative
    taken through it is NaN at ``v = 0`` (the ``where``-on-the-output trap).
    """
    sq = tree_sq_norm(tree)
    positive = sq > 0
    norm = jnp.sqrt(jnp.where(positive, sq, 1.0))
    inv = jnp.where(positive, 1.0 / norm, 0.0)
    scaled = jax.tree.map(lambda leaf: leaf * inv.astype(leaf.dtype), tree)
    return scaled, jnp.where(positive, norm, 0.0)


def tree_add_scaled(a: PyTree, scale: Any, b: PyTree) -> PyTree:
    """``a + scale · b`` leafwise, keeping each leaf of ``a``'s dtype."""
    return jax.tree.map(lambda x, y: x + jnp.asarray(scale, x.dtype) * y.astype(x.dtype), a, b)


def random_like(key: Key, tree: PyTree, kind: str = "gaussian") -> PyTree:
    """Independent draws shaped like ``tree``: ``"gaussian"`` (N(0, 1)) or ``"rademacher"`` (±1).

    Leaf ``i`` uses ``jax.random.split(key, num_leaves)[i]`` and the leaf's own dtype. Estimators
    that want one raveled draw (packed Rademacher bits) use ``nmelab.estimators.probes`` instead.

    Raises:
      ValueError: ``kind`` is not ``"gaussian"`` or ``"rademacher"``.
    """
    if kind not in ("gaussian", "rademacher"):
        raise ValueError(f"kind must be 'gaussian' or 'rademacher', got {kind!r}")
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    draw = jax.random.normal if kind == "gaussian" else jax.random.rademacher
    return jax.tree.unflatten(
        treedef,
        [draw(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves, strict=True)],
    )


def key_name(key: Any) -> str:
    """One key of a pytree path as plain text: ``DictKey("w") → "w"``, ``SequenceKey(0) → "0"``."""
    if isinstance(key, jax.tree_util.DictKey | jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    return str(key)


def layer_names(tree: PyTree) -> list[str]:
    """The layer of each leaf of ``tree``, in :func:`jax.tree.leaves` order: the one naming scheme.

    A leaf's layer is its key path minus the last key, joined with ``/``: flax's
    ``{"params": {"Dense_0": {"kernel", "bias"}}}`` gives ``"params/Dense_0"``; nested modules give
    ``"params/Block_0/Dense_0"``; a list of dicts gives ``"0"``, ``"1"``, ...; a leaf directly under
    the root is its own layer (``"conv1"``); a bare array is the layer ``"params"``.
    """
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = [key_name(k) for k in path]
        names.append("/".join(keys[:-1]) or "/".join(keys) or "params")
    return names
