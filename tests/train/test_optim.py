"""The optimizer: L2 weight decay before (Nesterov) momentum, warmup + cosine schedule."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nmelab.train.optim import learning_rate_schedule, sgd


def test_cosine_schedule_with_linear_warmup():
    schedule = learning_rate_schedule(0.4, total_steps=100, warmup_steps=10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.2)
    assert float(schedule(10)) == pytest.approx(0.4)
    # cosine from the end of the warmup to 0 at total_steps
    assert float(schedule(55)) == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
    constant = learning_rate_schedule(0.4, total_steps=100, schedule="constant")
    assert float(constant(0)) == float(constant(99)) == pytest.approx(0.4)


@pytest.mark.parametrize("nesterov", [False, True])
def test_l2_weight_decay_enters_before_momentum(nesterov):
    """d_t = g_t + λθ_t;  m_t = μ m_{t-1} + d_t;  θ_{t+1} = θ_t − η (d_t + μ m_t if Nesterov else m_t)."""
    lr, mu, wd = 0.1, 0.9, 0.01
    tx = sgd(optax.constant_schedule(lr), mu, nesterov, wd)
    theta = {"w": jnp.array([1.0, -2.0], jnp.float64)}
    grads = [jnp.array([0.5, 0.25], jnp.float64), jnp.array([-1.0, 3.0], jnp.float64)]
    state = tx.init(theta)
    expected, momentum = np.array([1.0, -2.0]), np.zeros(2)
    for g in grads:
        updates, state = tx.update({"w": g}, state, theta)
        theta = optax.apply_updates(theta, updates)
        d = np.asarray(g) + wd * expected
        momentum = mu * momentum + d
        expected = expected - lr * ((d + mu * momentum) if nesterov else momentum)
        np.testing.assert_allclose(theta["w"], expected, rtol=1e-12)


def test_weight_decay_mask_skips_one_dimensional_leaves():
    tx = sgd(optax.constant_schedule(1.0), 0.0, False, 0.5, "no_bn_and_bias")
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    zeros = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros((2,))}
    updates, _ = tx.update(zeros, tx.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.5)
    np.testing.assert_allclose(updates["bias"], 0.0)


def test_bad_optimizer_settings():
    with pytest.raises(ValueError, match="momentum"):
        sgd(optax.constant_schedule(0.1), momentum=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        sgd(optax.constant_schedule(0.1), weight_decay=-1.0)
    with pytest.raises(ValueError, match="weight_decay_mask"):
        sgd(optax.constant_schedule(0.1), weight_decay=0.1, weight_decay_mask="some")
    with pytest.raises(ValueError, match="warmup_steps"):
        learning_rate_schedule(0.1, total_steps=10, warmup_steps=11)
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate_schedule(0.1, total_steps=10, schedule="step")
