"""Which parameters L2 weight decay applies to: the named masks shared by the optimizer and SAM.

L2 weight decay adds ``(λ/2)‖m ⊙ θ‖²`` to the loss, i.e. ``λ·m ⊙ θ`` to the gradient, where the
mask ``m`` is 1 on the decayed leaves and 0 elsewhere. The recipes the paper follows differ here:

==================  ============================================================================
mask                decayed leaves
==================  ============================================================================
``all``             every parameter (Zagoruyko & Komodakis 2016; google-research/sam's default)
``no_bn``           all but the parameters of normalisation layers (BN γ and β): Goyal et al.
                    (2017) §5.1, "we do not apply weight decay on the learnable BN coefficients"
``no_bn_and_bias``  only leaves with more than one dimension (kernels): no BN γ/β and no biases,
                    google-research/sam's ``no_weight_decay_on_bn`` rule (``x.ndim > 1``) and the
                    "no bias decay" of He et al. (2019)
==================  ============================================================================

A normalisation layer is recognised by its parameters: flax's ``BatchNorm``, ``LayerNorm`` and
``GroupNorm`` name their gain ``scale``, so every leaf of a module that holds a ``scale`` leaf is
treated as normalisation. Trap: a normalisation layer built with ``use_scale=False`` has no
``scale`` and is decayed under ``no_bn`` (its shift is still exempt under ``no_bn_and_bias``).
"""

from __future__ import annotations

import jax

from nmelab._tree import key_name
from nmelab.types import PyTree

__all__ = ["WEIGHT_DECAY_MASKS", "check_weight_decay_mask", "weight_decay_mask"]

WEIGHT_DECAY_MASKS: tuple[str, ...] = ("all", "no_bn", "no_bn_and_bias")
"""The mask names :func:`weight_decay_mask` accepts."""


def check_weight_decay_mask(kind: object, arg: str = "weight_decay_mask") -> None:
    """Raise a ValueError naming ``arg`` unless ``kind`` is one of :data:`WEIGHT_DECAY_MASKS`."""
    if not isinstance(kind, str) or kind not in WEIGHT_DECAY_MASKS:
        raise ValueError(f"{arg}: expected one of {', '.join(WEIGHT_DECAY_MASKS)}; got {kind!r}")


def weight_decay_mask(params: PyTree, kind: str) -> PyTree:
    """A pytree of Python bools shaped like ``params``: ``True`` where weight decay applies.

    Args:
      params: the parameters (flax ``{"params": ...}`` contents or any pytree; for ``no_bn`` the
        leaves must carry flax's names).
      kind: one of :data:`WEIGHT_DECAY_MASKS` (see the module table).

    Raises:
      ValueError: an unknown ``kind``.
    """
    check_weight_decay_mask(kind)
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    if kind == "all":
        keep = [True] * len(leaves_with_path)
    elif kind == "no_bn_and_bias":
        keep = [len(getattr(leaf, "shape", ())) > 1 for _, leaf in leaves_with_path]
    else:
        paths = [tuple(key_name(k) for k in path) for path, _ in leaves_with_path]
        norm_layers = {path[:-1] for path in paths if path and path[-1] == "scale"}
        keep = [path[:-1] not in norm_layers for path in paths]
    return jax.tree.unflatten(treedef, keep)
