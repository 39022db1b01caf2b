"""Exact and Hutchinson diagonals of H, GN and NME against the dense float64 twins."""

import estimator_cases as cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nmelab
import nmelab.estimators
from nmelab.estimators import probes

NAMES = list(cases.OPERATORS)


def _flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


@pytest.mark.parametrize("name", NAMES)
def test_exact_diagonal_equals_dense_diagonal(name):
    op = cases.operator(name)
    est = nmelab.diagonal(op, exact=True, batch_size=16)
    assert jax.tree.structure(est.value) == jax.tree.structure(op.params)
    expect = np.diag(np.asarray(cases.dense_matrix(name)))
    np.testing.assert_allclose(_flat(est.value), expect, rtol=1e-11, atol=1e-14)
    assert np.all(_flat(est.stderr) == 0) and est.num_matvecs == op.num_params
    # The generic product route (a linearized operator) gives the same numbers.
    lin = nmelab.diagonal(op.linearize(), exact=True, batch_size=16)
    np.testing.assert_allclose(_flat(lin.value), expect, rtol=1e-11, atol=1e-14)


def test_relu_nme_diagonal_is_exactly_zero():
    # App. A.2: phi'' = 0 makes every within-layer block, hence the diagonal, of the NME vanish.
    op = cases.operator("nme", "mlp", "relu")
    assert np.max(np.abs(_flat(nmelab.diagonal(op, exact=True).value))) == 0.0


@pytest.mark.parametrize("probe", probes.PROBES)
def test_hutchinson_diagonal_within_variance_derived_tolerance(probe):
    matrix = np.asarray(cases.dense_matrix("hessian"))
    op = cases.operator("hessian")
    num = 400
    est = nmelab.diagonal(op, jax.random.key(0), num, probe=probe, batch_size=64)  # 7 chunks
    value, stderr = _flat(est.value), _flat(est.stderr)
    diag = np.diag(matrix)
    # Exact per-entry variance of v_i (A v)_i: Σ_{j≠i} A_ij² (+ 2 A_ii² for Gaussian probes).
    off = np.sum(matrix**2, axis=1) - diag**2
    variance = off + (2 * diag**2 if probe == "gaussian" else 0)
    z = (value - diag) / np.sqrt(variance / num)
    assert np.max(np.abs(z)) < 4.5  # 64 entries: P(max |z| > 4.5) ~ 4e-4 for normal z
    # The reported stderr estimates the exact one (relative sd ~ sqrt(2/n) ~ 7% plus kurtosis).
    ratio = stderr / np.sqrt(variance / num)
    assert np.all(np.abs(ratio - 1) < 0.5)
    assert abs(np.mean(ratio) - 1) < 0.05


def test_hutchinson_diagonal_chunking_does_not_change_the_statistics():
    op = cases.operator("nme")
    key = jax.random.key(3)
    a = nmelab.diagonal(op, key, 10, batch_size=3)  # chunks of 3 with a masked remainder
    b = nmelab.diagonal(op, key, 10, batch_size=10)
    np.testing.assert_allclose(_flat(a.value), _flat(b.value), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_flat(a.stderr), _flat(b.stderr), rtol=1e-10, atol=1e-15)
    # ... and equals the direct mean/std of v ⊙ A v on the documented probes.
    matrix = np.asarray(cases.dense_matrix("nme"))
    vs = np.stack([_flat(probes.sample_probe(k, op.params)) for k in probes.probe_keys(key, 10)])
    samples = vs * (vs @ matrix.T)
    np.testing.assert_allclose(_flat(a.value), samples.mean(0), rtol=1e-10, atol=1e-14)
    se = samples.std(0, ddof=1) / np.sqrt(10)
    np.testing.assert_allclose(_flat(a.stderr), se, rtol=1e-8, atol=1e-14)


def test_diagonal_bad_inputs():
    op = cases.operator("hessian")
    with pytest.raises(ValueError, match="num_probes must be an integer >= 1, got 0"):
        nmelab.diagonal(op, jax.random.key(0), 0)
    with pytest.raises(TypeError, match="key"):
        nmelab.diagonal(op, None, 3)
    with pytest.raises(ValueError, match="probe must be one of"):
        nmelab.diagonal(op, jax.random.key(0), 3, probe="uniform")
    with pytest.raises(TypeError, match="op must be an nmelab operator"):
        nmelab.diagonal(jnp.eye(3), exact=True)


def test_diagonal_split_equals_dense_diagonals():
    objective, params, batch = cases.problem()
    split = nmelab.estimators.diagonal_split(objective, params, batch, batch_size=16)
    for name, est in split.as_dict().items():
        expect = np.diag(np.asarray(cases.dense_matrix(name)))
        np.testing.assert_allclose(_flat(est.value), expect, rtol=1e-11, atol=1e-14)
    total = _flat(split.gauss_newton.value) + _flat(split.nme.value)
    np.testing.assert_allclose(_flat(split.hessian.value), total, rtol=0, atol=1e-15)
