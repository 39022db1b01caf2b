"""Shared helpers of the trainer tests: small configs and bitwise state comparison."""

from __future__ import annotations

import jax
import numpy as np

from nmelab.train import apply_overrides, default_config


def tiny_config(**overrides):
    """A seconds-long run: synthetic 8-dim data, mlp_tiny, progress off."""
    base = {
        "dataset": "synthetic",
        "dataset_kwargs": {"shape": (8,), "num_train": 64, "num_test": 32},
        "model": "mlp_tiny",
        "learning_rate": 0.1,
        "batch_size": 16,
        "eval_batch_size": 32,
        "num_epochs": 2.0,
        "log_every_steps": 2,
        "progress": False,
    }
    base.update(overrides)
    return apply_overrides(default_config(), base)


def assert_trees_equal(a, b):
    """Bitwise equality of two pytrees of arrays (same structure, dtype and bits)."""
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()
