"""Ghost BatchNorm (``bn_batch``): statistics per group of examples, against a hand computation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmelab import models
from nmelab.models import BN_EPSILON, BN_MOMENTUM, GhostBatchNorm

RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 3, 2, 4)) * 2.0 + 1.5  # 6 examples, 3x2 positions, 4 channels
GAMMA = RNG.standard_normal(4)
BETA = RNG.standard_normal(4)
RUNNING_MEAN = RNG.standard_normal(4)
RUNNING_VAR = RNG.uniform(0.5, 2.0, 4)
VARIABLES = {
    "params": {"scale": jnp.asarray(GAMMA), "bias": jnp.asarray(BETA)},
    "batch_stats": {"mean": jnp.asarray(RUNNING_MEAN), "var": jnp.asarray(RUNNING_VAR)},
}


def hand_train_mode(x, group):
    """Loops over groups and channels: mean and biased variance over the group's N·H·W values."""
    out = np.empty_like(x)
    means, variances = [], []
    for start in range(0, len(x), group):
        block = x[start : start + group]
        mean = np.array([block[..., c].mean() for c in range(x.shape[-1])])
        var = np.array([((block[..., c] - mean[c]) ** 2).mean() for c in range(x.shape[-1])])
        out[start : start + group] = (block - mean) / np.sqrt(var + BN_EPSILON) * GAMMA + BETA
        means.append(mean)
        variances.append(var)
    new_mean = BN_MOMENTUM * RUNNING_MEAN + (1 - BN_MOMENTUM) * np.mean(means, axis=0)
    new_var = BN_MOMENTUM * RUNNING_VAR + (1 - BN_MOMENTUM) * np.mean(variances, axis=0)
    return out, new_mean, new_var


@pytest.mark.parametrize("group", [1, 2, 3, 6])
def test_train_mode_normalises_each_group_with_its_own_statistics(group):
    layer = GhostBatchNorm(bn_batch=group, use_running_average=False)
    y, mutated = layer.apply(VARIABLES, jnp.asarray(X), mutable=["batch_stats"])
    want, want_mean, want_var = hand_train_mode(X, group)
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(mutated["batch_stats"]["mean"], want_mean, rtol=1e-12)
    np.testing.assert_allclose(mutated["batch_stats"]["var"], want_var, rtol=1e-12)


def test_eval_mode_uses_the_running_statistics_only():
    layer = GhostBatchNorm(bn_batch=2, use_running_average=True)
    y = layer.apply(VARIABLES, jnp.asarray(X))
    want = (X - RUNNING_MEAN) / np.sqrt(RUNNING_VAR + BN_EPSILON) * GAMMA + BETA
    np.testing.assert_allclose(y, want, rtol=1e-12)
    # a per-example function: example 0 alone gives the same output
    np.testing.assert_allclose(layer.apply(VARIABLES, jnp.asarray(X[:1])), want[:1], rtol=1e-12)


def test_groups_do_not_see_each_other():
    layer = GhostBatchNorm(bn_batch=3, use_running_average=False)
    changed = X.copy()
    changed[4] += 10.0  # second group only
    a, _ = layer.apply(VARIABLES, jnp.asarray(X), mutable=["batch_stats"])
    b, _ = layer.apply(VARIABLES, jnp.asarray(changed), mutable=["batch_stats"])
    np.testing.assert_array_equal(a[:3], b[:3])
    assert not np.allclose(a[3:], b[3:])


@pytest.mark.parametrize("train", [True, False])
def test_one_group_of_the_whole_batch_is_flax_batch_norm(train):
    ours = GhostBatchNorm(bn_batch=len(X), use_running_average=not train)
    ref = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
    x = jnp.asarray(X)
    y, stats = ours.apply(VARIABLES, x, mutable=["batch_stats"])
    y_ref, stats_ref = ref.apply(VARIABLES, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, y_ref, rtol=1e-9, atol=1e-9)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9), stats, stats_ref)
    # same variable names and shapes as flax's BatchNorm: checkpoints are interchangeable
    init = ours.init(jax.random.key(0), x)
    init_ref = ref.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, init) == jax.tree.map(jnp.shape, init_ref)


def test_batch_not_a_multiple_of_bn_batch_is_refused_in_train_mode_only():
    layer = GhostBatchNorm(bn_batch=4, use_running_average=False)
    with pytest.raises(ValueError, match="not a multiple of bn_batch=4"):
        layer.apply(VARIABLES, jnp.asarray(X), mutable=["batch_stats"])
    GhostBatchNorm(bn_batch=4, use_running_average=True).apply(VARIABLES, jnp.asarray(X))


def _filled_variables(model, x):
    from test_models import fill_by_shape

    return fill_by_shape(model, x, seed=0)


@pytest.mark.parametrize("name", ["resnet_tiny", "wrn_tiny"])
def test_model_option_bn_batch_groups_the_whole_network(name):
    x = jnp.asarray(RNG.standard_normal((4, 8, 8, 3)))  # float64: flax's one-pass variance
    # and ours agree to rounding only
    ghost = models.get(name, num_classes=3, bn_batch=2)
    whole = models.get(name, num_classes=3)
    variables = jax.tree.map(lambda a: np.asarray(a, np.float64), _filled_variables(whole, x))
    z_ghost, _ = ghost.apply(variables, x, train=True, mutable=["batch_stats"])
    z_pairs = [
        whole.apply(variables, x[i : i + 2], train=True, mutable=["batch_stats"])[0] for i in (0, 2)
    ]
    np.testing.assert_allclose(z_ghost, np.concatenate(z_pairs), rtol=1e-9, atol=1e-9)
    z_whole, _ = whole.apply(variables, x, train=True, mutable=["batch_stats"])
    assert not np.allclose(z_ghost, z_whole, atol=1e-4)
    # eval mode does not depend on bn_batch
    np.testing.assert_array_equal(
        ghost.apply(variables, x, train=False), whole.apply(variables, x, train=False)
    )


def test_bad_bn_batch_values_are_named():
    x = jnp.zeros((3, 8, 8, 3))
    with pytest.raises(ValueError, match="bn_batch: expected None or an integer >= 1, got 0"):
        models.get("resnet_tiny", bn_batch=0).init(jax.random.key(0), x, train=False)
    with pytest.raises(ValueError, match="bn_axis_name"):
        models.get("resnet_tiny", bn_batch=2, bn_axis_name="data").init(
            jax.random.key(0), x, train=False
        )
