"""The sampled-label Gauss-Newton trace (paper eq. 20): exact unbiasedness by enumeration, MC check."""

import itertools

import estimator_cases as cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nmelab
from nmelab.curvature import dense
from nmelab.estimators import gn_trace_from_labels, probes, sample_model_labels

FORMS = ("minibatch", "per_example")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("num", [2, 3])
def test_enumeration_over_all_labels_equals_exact_gn_trace(form, num):
    # N examples, K = 3 classes: K^N label combinations weighted by their model probabilities.
    objective, params, batch = cases.problem("mlp", "tanh", "cross_entropy", num=num, seed=3)
    x = batch[0]
    truth = float(jnp.trace(dense.dense_gauss_newton(objective, params, batch)))
    probs = np.asarray(jax.nn.softmax(objective.outputs(params, x), axis=-1))
    value_fn = jax.jit(lambda labels: gn_trace_from_labels(objective, params, x, labels, form))
    total, weight_sum = 0.0, 0.0
    for labels in itertools.product(range(probs.shape[1]), repeat=num):
        weight = float(np.prod(probs[np.arange(num), labels]))
        total += weight * float(value_fn(jnp.asarray(labels)))
        weight_sum += weight
    assert abs(weight_sum - 1.0) < 1e-14
    assert abs(total - truth) <= 1e-12 * abs(truth)


@pytest.mark.parametrize("form", FORMS)
def test_monte_carlo_converges_within_four_stderr(form):
    objective, params, batch = cases.problem()
    truth = float(jnp.trace(cases.dense_matrix("gauss_newton")))
    est = nmelab.gn_trace_sampled(objective, params, batch, jax.random.key(0), 400, form=form)
    assert est.samples.shape == (400,) and float(est.stderr) > 0
    assert abs(float(est.value) - truth) < 4 * float(est.stderr)
    n = batch[0].shape[0]
    assert est.num_matvecs == 400 * (n if form == "per_example" else 1)


def test_without_the_factor_n_the_minibatch_form_is_off_by_n():
    # The test above has power: dropping N (a common bug) misses the truth by a factor N = 6.
    objective, params, batch = cases.problem()
    truth = float(jnp.trace(cases.dense_matrix("gauss_newton")))
    est = nmelab.gn_trace_sampled(objective, params, batch, jax.random.key(0), 400)
    n = batch[0].shape[0]
    assert abs(float(est.value) / n - truth) > 4 * float(est.stderr) / n


def test_single_sample_is_the_estimator_sample_and_differentiable():
    objective, params, batch = cases.problem()
    key = jax.random.key(9)
    est = nmelab.gn_trace_sampled(objective, params, batch, key, 3)
    keys = probes.probe_keys(key, 3)
    for i in range(3):
        one = nmelab.gn_trace_sample(objective, params, batch, keys[i])
        np.testing.assert_allclose(float(one), float(est.samples[i]), rtol=1e-12)
    # Differentiable in params with the labels held fixed: the gradient is that of N‖∇L(θ, ŷ)‖²
    # at the sampled labels, which a central finite difference along a random direction checks.
    grad = jax.jit(jax.grad(lambda p: nmelab.gn_trace_sample(objective, p, batch, keys[0])))(params)
    labels = sample_model_labels(objective, params, batch[0], keys[0])
    direction = probes.sample_probe(jax.random.key(1), params, "gaussian")

    def at(t):
        shifted = jax.tree.map(lambda p, d: p + t * d, params, direction)
        return float(gn_trace_from_labels(objective, shifted, batch[0], labels))

    eps = 1e-5
    fd = (at(eps) - at(-eps)) / (2 * eps)
    analytic = sum(
        float(jnp.vdot(g, d))
        for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
    )
    assert abs(fd - analytic) <= 1e-6 * max(1.0, abs(analytic))


def test_labels_are_sampled_independently_from_the_model():
    # Each example's label frequencies match its own softmax (chi-square style 4-sigma check).
    objective, params, batch = cases.problem()
    x = batch[0]
    keys = jax.random.split(jax.random.key(2), 4000)
    labels = np.asarray(jax.vmap(lambda k: sample_model_labels(objective, params, x, k))(keys))
    probs = np.asarray(jax.nn.softmax(objective.outputs(params, x), axis=-1))
    for n in range(x.shape[0]):
        freq = np.bincount(labels[:, n], minlength=probs.shape[1]) / len(keys)
        sd = np.sqrt(probs[n] * (1 - probs[n]) / len(keys))
        assert np.all(np.abs(freq - probs[n]) < 4 * sd + 1e-12)


def test_bad_inputs():
    objective, params, batch = cases.problem()
    key = jax.random.key(0)
    mse_objective, mse_params, mse_batch = cases.problem("mlp", "gelu", "mse")
    with pytest.raises(ValueError, match="needs objective.loss == 'cross_entropy'.*'mse'"):
        nmelab.gn_trace_sampled(mse_objective, mse_params, mse_batch, key, 4)
    with pytest.raises(ValueError, match="needs objective.loss"):
        nmelab.gn_trace_sample(mse_objective, mse_params, mse_batch, key)
    with pytest.raises(ValueError, match="form must be one of"):
        nmelab.gn_trace_sampled(objective, params, batch, key, 4, form="diagonal")
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1, got 0"):
        nmelab.gn_trace_sampled(objective, params, batch, key, 0)
    with pytest.raises(ValueError, match="batch must be a pair"):
        nmelab.gn_trace_sampled(objective, params, batch[0], key, 2)
