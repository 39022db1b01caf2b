"""Traces of H, GN and NME: Hutchinson, Hutch++, exact and the shared-probe split, against dense twins.

Every stochastic check has a tolerance derived from the estimator's variance (4 standard errors),
and where possible the exact variance ``Var(vᵀAv) = 2(‖A‖_F² − Σ A_ii²)`` (Rademacher) is used.
"""

import estimator_cases as cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nmelab
import toy_problems as tp
from nmelab.estimators import probes

NAMES = list(cases.OPERATORS)
# (operator, problem): every operator on the tanh MLP, plus the Hessian of a CNN and of an MSE MLP.
CASES = [(name, ("mlp", "tanh", "cross_entropy")) for name in NAMES] + [
    ("hessian", ("cnn", "tanh", "cross_entropy")),
    ("nme", ("mlp", "gelu", "mse")),
]
NUM, CHUNK = 200, 50  # shared by several tests so that they hit the same compiled code


def _rademacher_variance(matrix):
    m = np.asarray(matrix)
    return 2.0 * (np.sum(m**2) - np.sum(np.diag(m) ** 2))


@pytest.mark.parametrize("name,problem", CASES)
def test_hutchinson_within_four_stderr_of_the_dense_trace(name, problem):
    op = cases.operator(name, *problem)
    truth = float(jnp.trace(cases.dense_matrix(name, *problem)))
    est = nmelab.trace(op, jax.random.key(3), NUM, batch_size=CHUNK)
    assert est.num_matvecs == NUM and est.samples.shape == (NUM,)
    assert float(est.stderr) > 0
    assert abs(float(est.value) - truth) < 4 * float(est.stderr)


@pytest.mark.parametrize("name", NAMES)
def test_exact_trace_equals_dense_trace(name):
    op = cases.operator(name)
    truth = float(jnp.trace(cases.dense_matrix(name)))
    exact = nmelab.trace(op, method="exact", batch_size=16)
    assert exact.num_matvecs == op.num_params and float(exact.stderr) == 0.0
    assert abs(float(exact.value) - truth) <= 1e-12 * max(1.0, abs(truth))


@pytest.mark.parametrize("name", NAMES)
def test_fast_quadratic_forms_equal_linearized_products(name):
    # The forward-only route (no backward pass) and <v, A v> from the linearized product agree
    # sample by sample; linearized operators, the Fisher and wrapped matrices take the product route.
    op = cases.operator(name)
    key = jax.random.key(0)
    fast = nmelab.trace(op, key, NUM, batch_size=CHUNK)
    slow = nmelab.trace(op.linearize(), key, NUM, batch_size=CHUNK)
    np.testing.assert_allclose(fast.samples, slow.samples, rtol=1e-11, atol=1e-13)


def test_augmented_relu_forms_use_the_custom_second_derivative():
    # Augmented ReLU's AD f'' is not the forward's (eq. 15): the forward-over-forward forms must use
    # the same custom rule as the forward-over-reverse products.
    activations = pytest.importorskip("nmelab.activations")
    _, params, batch = cases.problem()
    objective = nmelab.Objective(tp.mlp_apply_fn(activations.get("augmented_relu", beta=2.0)))
    op = nmelab.nme(objective, params, batch)
    key = jax.random.key(4)
    fast = nmelab.trace(op, key, 6)
    slow = nmelab.trace(op.linearize(), key, 6)
    assert float(jnp.max(jnp.abs(fast.samples))) > 1e-6  # nonzero: the custom f'' is used
    np.testing.assert_allclose(fast.samples, slow.samples, rtol=1e-11, atol=1e-13)


def test_stderr_matches_exact_variance_and_shrinks_like_one_over_sqrt_n():
    op = cases.operator("hessian")
    sigma2 = _rademacher_variance(cases.dense_matrix("hessian"))
    keys = jax.random.split(jax.random.key(11), 200)  # vmapped over seeds: one compile per n
    se2_by_n = {}
    for n in (30, 120):
        est = jax.vmap(lambda k, n=n: nmelab.trace(op, k, n))(keys)
        se2 = np.asarray(est.stderr) ** 2 * n  # unbiased for sigma2
        # E[n·stderr²] = σ²: within 4 standard errors of the mean over seeds.
        assert abs(se2.mean() - sigma2) < 4 * se2.std(ddof=1) / np.sqrt(len(se2))
        se2_by_n[n] = np.asarray(est.stderr) ** 2
        # The spread of the estimates themselves is σ²/n (sd of a sample variance ~ sqrt(2/(S-1))).
        var = np.asarray(est.value).var(ddof=1)
        assert abs(var - sigma2 / n) < 4 * (sigma2 / n) * np.sqrt(2 / (len(keys) - 1))
    # stderr² shrinks by n2/n1 = 4 (stderr by 2): the ratio of the two means over seeds, with a
    # 4-sigma tolerance propagated from the spread of stderr² over the seeds.
    a, b = se2_by_n[30], se2_by_n[120]
    rel_sd = np.sqrt((a.var(ddof=1) / a.mean() ** 2 + b.var(ddof=1) / b.mean() ** 2) / len(keys))
    assert abs(a.mean() / b.mean() / 4.0 - 1.0) < 4 * rel_sd


def test_gaussian_probe_variance_is_two_frobenius_squared():
    op = cases.operator("gauss_newton")
    matrix = np.asarray(cases.dense_matrix("gauss_newton"))
    est = nmelab.trace(op, jax.random.key(2), 2000, probe="gaussian", batch_size=250)
    truth = np.trace(matrix)
    assert abs(float(est.value) - truth) < 4 * float(est.stderr)
    samples = np.asarray(est.samples)
    s2 = samples.var(ddof=1)
    fourth = np.mean((samples - samples.mean()) ** 4)
    assert abs(s2 - 2 * np.sum(matrix**2)) < 4 * np.sqrt((fourth - s2**2) / len(samples))


@pytest.mark.parametrize("name", NAMES)
def test_ninety_five_percent_intervals_cover_the_truth(name):
    op = cases.operator(name)
    truth = float(jnp.trace(cases.dense_matrix(name)))
    keys = jax.random.split(jax.random.key(7), 200)
    est = jax.vmap(lambda k: nmelab.trace(op, k, 30))(keys)
    covered = np.abs(np.asarray(est.value) - truth) <= 1.96 * np.asarray(est.stderr)
    assert 0.90 <= covered.mean() <= 0.99


def test_trace_split_shares_probes_and_matches_linearize_split():
    objective, params, batch = cases.problem()
    key = jax.random.key(5)
    split = nmelab.trace_split(objective, params, batch, key, 40, batch_size=20)
    h, gn, nme = (np.asarray(e.samples) for e in (split.hessian, split.gauss_newton, split.nme))
    np.testing.assert_allclose(h, gn + nme, rtol=0, atol=1e-14)
    # Sample by sample, the forms equal <v, A v> from nmelab.linearize_split on the same probes.
    products = jax.jit(nmelab.linearize_split(objective, params, batch))
    for i, k in enumerate(probes.probe_keys(key, 40)[:3]):
        v = probes.sample_probe(k, params)
        flat_v = ravel_pytree(v)[0]
        expect = [float(flat_v @ ravel_pytree(av)[0]) for av in products(v)]
        np.testing.assert_allclose([h[i], gn[i], nme[i]], expect, rtol=1e-11, atol=1e-13)
    for name, est in split.as_dict().items():
        truth = float(jnp.trace(cases.dense_matrix(name)))
        assert abs(float(est.value) - truth) < 4 * float(est.stderr)


def _low_rank_plus_noise(key, size=120, rank=8):
    k1, k2 = jax.random.split(key)
    basis, _ = jnp.linalg.qr(jax.random.normal(k1, (size, rank)))
    low = basis @ jnp.diag(jnp.linspace(50.0, 20.0, rank)) @ basis.T
    noise = jax.random.normal(k2, (size, size)) * 0.02
    return low + (noise + noise.T) / 2


def test_hutchpp_is_unbiased_honest_and_beats_hutchinson_at_equal_matvecs():
    matrix = _low_rank_plus_noise(jax.random.key(0))
    op = probes.matrix_operator(matrix)
    truth = float(jnp.trace(matrix))
    keys = jax.random.split(jax.random.key(1), 400)
    hpp = jax.vmap(lambda k: nmelab.trace(op, k, 30, method="hutchpp"))(keys)
    hut = jax.vmap(lambda k: nmelab.trace(op, k, 30))(keys)
    assert hpp.num_matvecs == hut.num_matvecs == 30
    v_hpp, v_hut = np.asarray(hpp.value), np.asarray(hut.value)
    # Unbiased: the mean over 400 seeds is within 4 standard errors of the truth.
    assert abs(v_hpp.mean() - truth) < 4 * v_hpp.std(ddof=1) / np.sqrt(len(v_hpp))
    # Lower variance: an F-type comparison; each sample variance has relative sd ~ sqrt(2/399).
    assert v_hpp.var(ddof=1) < 0.1 * v_hut.var(ddof=1)
    # Honest stderr: E[stderr²] equals the variance across seeds (relative sd of each ~ 7-10%).
    se2 = np.asarray(hpp.stderr) ** 2
    rel = 4 * np.sqrt(2 / (len(v_hpp) - 1) + se2.var(ddof=1) / se2.mean() ** 2 / len(se2))
    assert abs(se2.mean() / v_hpp.var(ddof=1) - 1) < rel


def test_hutchpp_on_a_model_and_with_a_full_sketch():
    op = cases.operator("hessian")
    truth = float(jnp.trace(cases.dense_matrix("hessian")))
    est = nmelab.trace(op, jax.random.key(0), 60, method="hutchpp")
    assert abs(float(est.value) - truth) < 4 * float(est.stderr)
    # When the sketch spans R^P (k = P) the deflated part vanishes: exact, stderr 0.
    small = probes.matrix_operator(jnp.diag(jnp.arange(1.0, 5.0)))
    full = nmelab.trace(small, jax.random.key(0), 14, method="hutchpp")
    assert abs(float(full.value) - 10.0) < 1e-12 and float(full.stderr) < 1e-12


def test_float32_trace_stays_float32():
    objective, params, batch = cases.problem()
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    batch32 = (batch[0].astype(jnp.float32), batch[1])
    est = nmelab.trace(nmelab.hessian(objective, params32, batch32), jax.random.key(0), 8)
    assert est.value.dtype == jnp.float32
    exact = float(jnp.trace(cases.dense_matrix("hessian")))
    assert abs(float(est.value) - exact) < 4 * float(est.stderr)


def test_single_probe_has_nan_stderr_and_a_raw_key_works():
    est = nmelab.trace(cases.operator("hessian"), jax.random.PRNGKey(0), 1)
    assert np.isnan(float(est.stderr)) and "±" in str(est)


def test_bad_inputs_raise_clear_errors():
    objective, params, batch = cases.problem()
    op = cases.operator("hessian")
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_probes must be an integer >= 1, got 0"):
        nmelab.trace(op, key, 0)
    with pytest.raises(TypeError, match="num_probes"):
        nmelab.trace(op, key, 2.5)
    with pytest.raises(ValueError, match="num_probes must be an integer >= 3"):
        nmelab.trace(op, key, 2, method="hutchpp")
    with pytest.raises(ValueError, match="method must be one of"):
        nmelab.trace(op, key, 4, method="girard")
    with pytest.raises(ValueError, match="probe must be one of"):
        nmelab.trace(op, key, 4, probe="sphere")
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        nmelab.trace(op, None, 4)
    with pytest.raises(ValueError, match="key must be"):
        nmelab.trace(op, jnp.zeros(3), 4)
    with pytest.raises(TypeError, match="op must be an nmelab operator"):
        nmelab.trace(np.eye(3), key, 4)
    with pytest.raises(ValueError, match="batch_size"):
        nmelab.trace(op, key, 4, batch_size=0)
    with pytest.raises(ValueError, match="matrix must be square"):
        probes.matrix_operator(np.ones((2, 3)))
    with pytest.raises(ValueError, match="num_probes"):
        nmelab.trace_split(objective, params, batch, key, 0)
    with pytest.raises(ValueError, match="labels y must"):
        nmelab.trace_split(objective, params, (batch[0], batch[1] + 10), key, 3)
