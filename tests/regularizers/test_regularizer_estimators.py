"""The stochastic regularizers in expectation, with tolerances from the sample standard error.

Each test also checks its own power: a plausible wrong expectation (a missing ½ or factor N, a 10 %
wrong σ) is rejected by the same statistic.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from regularizer_helpers import (
    Z_MAX,
    assert_mean_matches,
    dense_gauss_newton,
    dense_hessian,
    dense_value_grad,
    flat,
    many_keys,
    max_z,
    problem_for,
    run,
    trace_value_and_gradient,
)

import nmelab
import toy_problems
from nmelab import regularizers
from nmelab.curvature import dense
from nmelab.regularizers.trace_penalties import sample_labels

# --------------------------------------------------------------------------------------------
# weight noise: an affine gradient makes the implied noise observable exactly
# --------------------------------------------------------------------------------------------


def _linear_regression_problem():
    kx, ky, kw = jax.random.split(jax.random.PRNGKey(7), 3)
    x = jax.random.normal(kx, (12, 3))
    y = jax.random.normal(ky, (12, 2))
    params = {"w": jax.random.normal(kw, (3, 2)), "b": jnp.array([0.1, -0.2])}
    objective = nmelab.Objective(lambda p, x: x @ p["w"] + p["b"], loss="mse")
    return objective, params, (x, y)


def test_weight_noise_implied_noise_has_the_right_mean_and_covariance():
    # L is quadratic, so ∇L(θ + ε) = g + Hε exactly and ε = H⁻¹(d − g) is observable.
    objective, params, batch = _linear_regression_problem()
    sigma, num = 0.3, 4000
    reg = regularizers.get("weight_noise", sigma=sigma)
    values, directions = many_keys(reg, objective, params, batch, num)
    _, g = dense_value_grad(objective, params, batch)
    hess = dense_hessian(objective, params, batch)
    eps = np.linalg.solve(np.asarray(hess), np.asarray(directions - g).T).T
    dim = eps.shape[1]
    # mean 0, standard error σ/√M
    assert np.max(np.abs(eps.mean(axis=0))) < Z_MAX * sigma / np.sqrt(num)
    # covariance σ²I: variances have stderr σ²√(2/(M−1)), covariances σ²/√M
    cov = np.cov(eps, rowvar=False)
    var_stderr = sigma**2 * np.sqrt(2 / (num - 1))
    assert np.max(np.abs(np.diag(cov) - sigma**2)) < Z_MAX * var_stderr
    assert np.max(np.abs(cov[~np.eye(dim, dtype=bool)])) < Z_MAX * sigma**2 / np.sqrt(num)
    # power: a 10 % error in σ would have been caught on every coordinate
    assert np.min(np.abs(np.diag(cov) - (1.1 * sigma) ** 2)) > Z_MAX * var_stderr
    # the value is the loss at the perturbed point
    vec, unravel = ravel_pytree(params)
    want = jax.vmap(lambda e: objective.value(unravel(vec + e), batch))(jnp.asarray(eps))
    np.testing.assert_allclose(values, want, rtol=1e-10)


def test_weight_noise_at_sigma_zero_is_the_gradient():
    objective, params, batch = problem_for("tanh")
    reg = regularizers.get("weight_noise", sigma=0.0)
    _, grads = run(reg, objective, params, batch, jax.random.key(0))
    np.testing.assert_allclose(flat(grads), dense_value_grad(objective, params, batch)[1])


# --------------------------------------------------------------------------------------------
# Hutchinson trace penalties: E[direction] = ∇L + (σ²/2)·∇tr A
# --------------------------------------------------------------------------------------------

TRACE_MATRICES = {"hessian_trace": dense.dense_hessian, "nme_trace": dense.dense_nme}


@pytest.mark.parametrize(
    ("name", "probe"),
    [
        ("hessian_trace", "gaussian"),
        ("hessian_trace", "rademacher"),
        ("nme_trace", "gaussian"),
        pytest.param("nme_trace", "rademacher", marks=pytest.mark.slow),
    ],
)
def test_trace_penalty_mean_over_keys_is_the_gradient_of_the_trace(name, probe):
    objective, params, batch = problem_for("tanh")
    sigma, num = 1.0, 4000
    reg = regularizers.get(name, sigma=sigma, probe=probe)
    values, directions = many_keys(reg, objective, params, batch, num)
    loss, g = dense_value_grad(objective, params, batch)
    trace, trace_grad = trace_value_and_gradient(TRACE_MATRICES[name], objective, params, batch)
    assert_mean_matches(directions, g + 0.5 * sigma**2 * trace_grad)
    assert_mean_matches(values[:, None], [loss + 0.5 * sigma**2 * trace])
    # power: the paper's σ²·tr (without the ½) would have been rejected
    assert max_z(directions, g + sigma**2 * trace_grad) > Z_MAX


# --------------------------------------------------------------------------------------------
# the sampled-label GN trace against an exact enumeration of the labels
# --------------------------------------------------------------------------------------------


def _gn_problem():
    return toy_problems.mlp_problem("tanh", sizes=(3, 4, 3), num=3, seed=2)


def _enumerated_gn(objective, params, batch, sigma, form):
    """``g + (σ²/2)·E_ŷ[∇_θ T̂(θ, ŷ)]`` and ``L + (σ²/2)·E_ŷ[T̂]``, summing over all labels."""
    x, _ = batch
    num, classes = x.shape[0], 3
    probs = jax.nn.softmax(objective.outputs(params, x), axis=-1)
    loss, g = dense_value_grad(objective, params, batch)

    def terms(sub_batch):  # ∇‖ĝ‖² = 2Ĥĝ and ‖ĝ‖² for the labels held fixed
        _, g_hat = dense_value_grad(objective, params, sub_batch)
        return 2 * dense.dense_hessian(objective, params, sub_batch) @ g_hat, g_hat @ g_hat

    if form == "minibatch":
        labels = jnp.array(list(itertools.product(range(classes), repeat=num)))
        weights = jnp.prod(probs[jnp.arange(num), labels], axis=1)
        grads, sq = jax.jit(jax.vmap(lambda lab: terms((x, lab))))(labels)
        expect_grad = num * weights @ grads
        expect_trace = num * weights @ sq
    else:
        rows, ks = (
            jnp.array(a) for a in zip(*itertools.product(range(num), range(classes)), strict=True)
        )
        weights = probs[rows, ks]
        grads, sq = jax.jit(jax.vmap(lambda n, k: terms((x[n][None], k[None]))))(rows, ks)
        expect_grad = weights @ grads / num
        expect_trace = weights @ sq / num
    return g + 0.5 * sigma**2 * expect_grad, loss + 0.5 * sigma**2 * expect_trace


@pytest.mark.parametrize("form", ["minibatch", "per_example"])
def test_gn_trace_mean_over_keys_matches_the_enumerated_expectation(form):
    objective, params, batch = _gn_problem()
    sigma, num = 1.5, 6000
    reg = regularizers.get("gn_trace", sigma=sigma, form=form)
    values, directions = many_keys(reg, objective, params, batch, num)
    want, want_value = _enumerated_gn(objective, params, batch, sigma, form)
    assert_mean_matches(directions, want)
    assert_mean_matches(values[:, None], [want_value])
    # the expected penalty is (σ²/2)·tr GN of the mean loss (eq. 20): an independent identity
    gn = dense_gauss_newton(objective, params, batch)
    loss = objective.value(params, batch)
    np.testing.assert_allclose(want_value, loss + 0.5 * sigma**2 * jnp.trace(gn), rtol=1e-10)
    # power: doubling the penalty's gradient (a missing ½) would have been rejected
    _, g = dense_value_grad(objective, params, batch)
    assert max_z(directions, g + 2 * (want - g)) > Z_MAX
    if form == "minibatch":  # and so would dropping the factor N
        assert max_z(directions, g + (want - g) / batch[0].shape[0]) > Z_MAX


def test_gn_trace_labels_are_those_of_the_sampled_fisher_and_the_estimator():
    objective, params, batch = _gn_problem()
    key = jax.random.key(11)
    labels = sample_labels(objective.outputs(params, batch[0]), key)
    targets = nmelab.curvature.sampled_targets(objective, params, batch[0], key, 1)
    np.testing.assert_array_equal(jax.nn.one_hot(labels, 3), targets)
    same = nmelab.estimators.hutchinson.sample_model_labels(objective, params, batch[0], key)
    np.testing.assert_array_equal(labels, same)


@pytest.mark.parametrize("form", ["minibatch", "per_example"])
def test_gn_trace_penalty_is_the_estimators_single_sample(form):
    # (value − L)/(σ²/2) is nmelab.gn_trace_sample for the same key and form
    objective, params, batch = _gn_problem()
    key, sigma = jax.random.key(12), 0.8
    value, _ = run(
        regularizers.get("gn_trace", sigma=sigma, form=form), objective, params, batch, key
    )
    sample = nmelab.gn_trace_sample(objective, params, batch, key, form)
    penalty = (value - objective.value(params, batch)) / (0.5 * sigma**2)
    np.testing.assert_allclose(penalty, sample, rtol=1e-10)


@pytest.mark.parametrize("form", ["minibatch", "per_example"])
def test_gn_trace_per_key_closed_form_with_and_without_straight_through(form):
    # For the labels a key draws, the direction is ∇L + (σ²/2)·∇_θ T̂(θ) by double backprop on the
    # raveled params, where T̂ uses ∇_φ L(φ, t(θ)) at φ = θ and t(θ) = onehot(ŷ), or with
    # straight-through onehot(ŷ) + softmax z(θ) − softmax z(θ₀) (value onehot, derivative dp).
    objective, params, batch = _gn_problem()
    x, _ = batch
    num = x.shape[0]
    sigma, key = 0.9, jax.random.key(4)
    vec, unravel = ravel_pytree(params)
    logits0 = objective.outputs(params, x)
    onehot = jax.nn.one_hot(sample_labels(logits0, key), 3)

    def sampled_grad(f, straight_through, rows):
        t = onehot
        if straight_through:
            probs = jax.nn.softmax(objective.outputs(unravel(f), x), axis=-1)
            t = onehot + probs - jax.nn.softmax(logits0, axis=-1)
        return jax.grad(
            lambda q: nmelab.losses.cross_entropy(objective.outputs(unravel(q), x[rows]), t[rows])
        )(f)

    def trace_estimate(f, straight_through):
        if form == "minibatch":
            g_hat = sampled_grad(f, straight_through, slice(None))
            return num * g_hat @ g_hat
        per = [jnp.sum(sampled_grad(f, straight_through, slice(n, n + 1)) ** 2) for n in range(num)]
        return jnp.mean(jnp.stack(per))

    loss, g = dense_value_grad(objective, params, batch)
    directions = []
    for straight_through in (False, True):
        reg = regularizers.get(
            "gn_trace", sigma=sigma, form=form, straight_through=straight_through
        )
        value, grads = run(reg, objective, params, batch, key)
        trace, trace_grad = jax.value_and_grad(trace_estimate)(vec, straight_through)
        want = g + 0.5 * sigma**2 * trace_grad
        np.testing.assert_allclose(flat(grads), want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(value, loss + 0.5 * sigma**2 * trace, rtol=1e-12)
        directions.append(flat(grads))
    # straight-through changes the direction, so the check above tells the two apart
    assert np.linalg.norm(directions[0] - directions[1]) > 1e-3
