"""Lanczos eigenpairs against numpy.linalg.eigh on dense twins and known spectra."""

import estimator_cases as cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nmelab
from nmelab.estimators import matrix_operator
from nmelab.estimators.lanczos import lanczos_tridiagonal

NAMES = list(cases.OPERATORS)


def _residuals(matrix, values, vectors):
    return np.linalg.norm(vectors @ matrix.T - values[:, None] * vectors, axis=1)


def _stacked_flat(tree):
    return np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(tree))


@pytest.mark.parametrize("name", NAMES)
def test_full_lanczos_matches_eigh_at_both_ends(name):
    matrix = np.asarray(cases.dense_matrix(name))
    exact = np.linalg.eigvalsh(matrix)
    op = cases.operator(name)
    size = op.num_params
    scale = np.max(np.abs(exact))
    pairs = nmelab.eigenpairs(op, 6, "both", jax.random.key(0), num_iters=size)
    assert pairs.num_matvecs == size + 6
    expect = np.concatenate([exact[:3], exact[-3:]])
    np.testing.assert_allclose(pairs.eigenvalues, expect, rtol=0, atol=1e-8 * scale)
    vectors = _stacked_flat(pairs.eigenvectors)
    assert vectors.shape == (6, size)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-10)
    # The reported residuals are the true ones, and small.
    true_res = _residuals(matrix, np.asarray(pairs.eigenvalues), vectors)
    np.testing.assert_allclose(pairs.residual_norms, true_res, rtol=1e-6, atol=1e-13 * scale)
    assert np.max(true_res) < 1e-8 * scale
    if name == "nme":  # indefinite: both signs at the two ends
        assert exact[0] < 0 < exact[-1]


def test_partial_lanczos_extremes_converge():
    # 40 of P = 147 steps on a CNN Hessian: both extreme Ritz pairs have converged.
    matrix = np.asarray(cases.dense_matrix("hessian", "cnn"))
    exact, exact_vectors = np.linalg.eigh(matrix)
    op = cases.operator("hessian", "cnn")
    assert op.num_params > 100
    pairs = nmelab.eigenpairs(op, 2, "both", jax.random.key(1), num_iters=40)
    scale = np.max(np.abs(exact))
    np.testing.assert_allclose(pairs.eigenvalues, [exact[0], exact[-1]], atol=1e-8 * scale)
    vectors = _stacked_flat(pairs.eigenvectors)
    for i, j in ((0, 0), (1, -1)):
        # Ritz values obey |theta - lambda| <= residual norm for the nearest eigenvalue.
        theta = float(pairs.eigenvalues[i])
        assert np.min(np.abs(exact - theta)) <= float(pairs.residual_norms[i]) + 1e-12 * scale
        assert abs(abs(vectors[i] @ exact_vectors[:, j]) - 1) < 1e-6
        np.testing.assert_array_equal(ravel_pytree(pairs.eigenvector(i))[0], vectors[i])


def test_known_spectrum_with_multiplicities_via_restarts():
    # A diagonal matrix with repeated eigenvalues: one Krylov space sees each value once; the
    # restarts after breakdown recover the multiplicities.
    spectrum = np.array([-3.0, -3.0, 0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 5.0, 5.0, 5.0, 5.0])
    op = matrix_operator(jnp.diag(jnp.asarray(spectrum)))
    pairs = nmelab.eigenpairs(op, 12, "largest", jax.random.key(0), num_iters=12)
    np.testing.assert_allclose(pairs.eigenvalues, spectrum, atol=1e-12)
    assert np.max(np.asarray(pairs.residual_norms)) < 1e-12
    vectors = _stacked_flat(pairs.eigenvectors)
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(12), atol=1e-10)


def test_clustered_spectrum_and_outliers():
    # 200 eigenvalues clustered in [1, 1 + 1e-3] plus two outliers: the extremes converge fast.
    key = jax.random.key(3)
    size = 202
    spectrum = np.concatenate([[-4.0], 1.0 + 1e-3 * np.linspace(0, 1, size - 2), [10.0]])
    basis, _ = np.linalg.qr(np.asarray(jax.random.normal(key, (size, size))))
    matrix = (basis * spectrum) @ basis.T
    op = matrix_operator(jnp.asarray(matrix))
    pairs = nmelab.eigenpairs(op, 2, "both", jax.random.key(4), num_iters=20)
    np.testing.assert_allclose(pairs.eigenvalues, [-4.0, 10.0], atol=1e-10)
    top3 = nmelab.eigenpairs(op, 3, "largest", jax.random.key(4), num_iters=20)
    assert abs(float(top3.eigenvalues[-1]) - 10.0) < 1e-10
    # The next Ritz values lie inside the cluster.
    assert np.all(np.asarray(top3.eigenvalues[:2]) > 1 - 1e-8)
    assert np.all(np.asarray(top3.eigenvalues[:2]) < 1 + 1e-3 + 1e-8)


@pytest.mark.parametrize("matrix", [np.eye(5), np.zeros((5, 5))])
def test_immediate_breakdown_is_graceful(matrix):
    op = matrix_operator(jnp.asarray(matrix))
    pairs = nmelab.eigenpairs(op, 5, "smallest", jax.random.key(0), num_iters=5)
    assert np.all(np.isfinite(np.asarray(pairs.eigenvalues)))
    np.testing.assert_allclose(pairs.eigenvalues, np.diag(matrix), atol=1e-12)
    assert np.max(np.asarray(pairs.residual_norms)) < 1e-12


def test_float32_lanczos():
    objective, params, batch = cases.problem()
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    op = nmelab.hessian(objective, params32, (batch[0].astype(jnp.float32), batch[1]))
    exact = np.linalg.eigvalsh(np.asarray(cases.dense_matrix("hessian")))
    pairs = nmelab.eigenpairs(op, 2, "both", jax.random.key(0), num_iters=40)
    assert pairs.eigenvalues.dtype == jnp.float32
    np.testing.assert_allclose(pairs.eigenvalues, [exact[0], exact[-1]], atol=1e-4 * exact[-1])


def test_num_iters_is_capped_at_p():
    op = matrix_operator(jnp.diag(jnp.arange(1.0, 7.0)))
    pairs = nmelab.eigenpairs(op, 1, "largest", jax.random.key(0), num_iters=100)
    assert pairs.num_matvecs == 6 + 1
    assert abs(float(pairs.eigenvalues[0]) - 6.0) < 1e-12


def test_eigenpairs_bad_inputs():
    op = cases.operator("hessian")
    key = jax.random.key(0)
    size = op.num_params
    with pytest.raises(ValueError, match=f"k must be <= P = {size}"):
        nmelab.eigenpairs(op, size + 1, "largest", key, size)
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        nmelab.eigenpairs(op, 0, "largest", key)
    with pytest.raises(ValueError, match="k must be <= num_iters = 3"):
        nmelab.eigenpairs(op, 4, "largest", key, 3)
    with pytest.raises(ValueError, match="which must be one of"):
        nmelab.eigenpairs(op, 1, "middle", key)
    with pytest.raises(ValueError, match="num_iters must be an integer >= 1"):
        nmelab.eigenpairs(op, 1, "largest", key, 0)
    with pytest.raises(TypeError, match="key"):
        nmelab.eigenpairs(op, 1, "largest")
    asym = matrix_operator(jnp.eye(3), symmetric=False)
    with pytest.raises(ValueError, match="must be symmetric"):
        nmelab.eigenpairs(asym, 1, "largest", key)


@pytest.mark.parametrize("num_segments", [1, 3])
def test_segmented_scan_gives_the_same_tridiagonal(num_segments):
    # Large models build the basis in scan segments that carry only the reachable prefix; the
    # recurrence, restarts included, must not depend on the segmentation.
    spectrum = jnp.asarray(np.repeat([-2.0, 0.5, 1.0, 3.0], 3))
    op = matrix_operator(jnp.diag(spectrum) + 0.01 * jnp.ones((12, 12)))
    v0 = jnp.ones(12) / np.sqrt(12)
    mv = jax.jit(lambda u: op.mv(u))
    ref = lanczos_tridiagonal(mv, v0, 10, jax.random.key(0), num_segments=1)
    got = lanczos_tridiagonal(mv, v0, 10, jax.random.key(0), num_segments=num_segments)
    assert np.sum(np.asarray(ref[1][:9]) == 0) >= 1  # a breakdown and restart happened
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


def test_pytree_and_segmented_path_of_large_models(monkeypatch):
    # Large models run Lanczos on pytrees (no ravel per step) in scan segments; force that path on a
    # small model and compare with the dense twin and with the raveled path.
    from nmelab.estimators import lanczos

    matrix = np.asarray(cases.dense_matrix("nme"))
    exact = np.linalg.eigvalsh(matrix)
    op = cases.operator("nme")
    flat = nmelab.eigenpairs(op, 2, "both", jax.random.key(2), num_iters=op.num_params)
    monkeypatch.setattr(lanczos, "FLAT_MAX_PARAMS", 0)
    monkeypatch.setattr(lanczos, "SEGMENTED_ABOVE", 0)
    tree = nmelab.eigenpairs(op, 2, "both", jax.random.key(2), num_iters=op.num_params)
    scale = np.max(np.abs(exact))
    np.testing.assert_allclose(tree.eigenvalues, [exact[0], exact[-1]], atol=1e-8 * scale)
    np.testing.assert_allclose(tree.eigenvalues, flat.eigenvalues, atol=1e-10 * scale)
    assert jax.tree.structure(tree.eigenvector(0)) == jax.tree.structure(op.params)
    vectors = _stacked_flat(tree.eigenvectors)
    true_res = _residuals(matrix, np.asarray(tree.eigenvalues), vectors)
    np.testing.assert_allclose(tree.residual_norms, true_res, rtol=1e-6, atol=1e-12 * scale)
    sld = nmelab.spectral_density(op, jax.random.key(3), 2, 6)
    vs = [
        np.asarray(ravel_pytree(nmelab.estimators.sample_probe(k, op.params))[0])
        for k in jax.random.split(jax.random.key(3), 2)
    ]
    for i, v in enumerate(vs):
        v = v / np.linalg.norm(v)
        assert abs(float(sld.moment(1)[i]) - v @ matrix @ v) < 1e-10 * scale
