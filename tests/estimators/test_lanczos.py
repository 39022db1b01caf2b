"""Lanczos eigenpairs against numpy.linalg.eigh on dense twins and known spectra."""

import estimator_cases as cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nmelab
from nmelab.estimators import matrix_operator
from nmelab.estimators.lanczos import lanczos_tridiagonal, tridiagonal_matrix

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
    assert pairs.num_matvecs == size
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
    assert pairs.num_matvecs == 6
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


def _full_reorthogonalization_lanczos(matrix, v0, num_iters):
    """The previous implementation's recurrence in numpy: Gram-Schmidt against all, twice."""
    basis = [v0]
    alphas, betas = [], []
    v_prev, beta = np.zeros_like(v0), 0.0
    for _ in range(num_iters):
        w = matrix @ basis[-1] - beta * v_prev
        for _ in range(2):
            w = w - np.stack(basis).T @ (np.stack(basis) @ w)
        alphas.append(basis[-1] @ matrix @ basis[-1])
        beta = np.linalg.norm(w)
        betas.append(beta)
        v_prev = basis[-1]
        basis.append(w / beta)
    return np.array(alphas), np.array(betas)


def _clustered_matrix(size, seed):
    spectrum = np.concatenate([[-4.0, -3.9], np.linspace(0.0, 1.0, size - 4), [9.9, 10.0]])
    basis, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(size, size)))
    return (basis * spectrum) @ basis.T, spectrum


def test_partial_reorthogonalization_matches_full_and_eigh_at_both_ends():
    # 120 steps on a 300 x 300 matrix whose extremes converge early: plain Lanczos would lose
    # orthogonality and produce ghost copies; partial reorthogonalization must keep the Ritz values
    # of the old full-reorthogonalization recurrence and of eigh to 1e-8 at both ends.
    matrix, spectrum = _clustered_matrix(300, 0)
    op = matrix_operator(jnp.asarray(matrix))
    v0 = np.random.default_rng(1).normal(size=300)
    v0 /= np.linalg.norm(v0)
    alphas, betas, basis = lanczos_tridiagonal(op, "tree", jnp.asarray(v0), 120, jax.random.key(0))
    theta = np.linalg.eigvalsh(np.asarray(tridiagonal_matrix(alphas, betas)))
    ref_a, ref_b = _full_reorthogonalization_lanczos(matrix, v0, 120)
    ref_theta = np.linalg.eigvalsh(
        np.diag(ref_a) + np.diag(ref_b[:-1], 1) + np.diag(ref_b[:-1], -1)
    )
    ends = np.r_[0, 1, -2, -1]
    np.testing.assert_allclose(theta[ends], spectrum[ends], rtol=0, atol=1e-8)
    np.testing.assert_allclose(theta[ends], ref_theta[ends], rtol=0, atol=1e-8)
    # No ghosts: exactly one Ritz value near each extreme eigenvalue.
    assert np.sum(np.abs(theta - 10.0) < 1e-6) == 1 and np.sum(np.abs(theta + 4.0) < 1e-6) == 1
    # Semi-orthogonality of the basis, the invariant partial reorthogonalization maintains.
    v = np.asarray(basis)[:120]
    assert np.max(np.abs(v @ v.T - np.eye(120))) < 10 * np.sqrt(np.finfo(np.float64).eps)


def test_residuals_count_the_coefficients_full_passes_removed():
    # 80 steps on the clustered matrix take several full passes; the reported residuals come from
    # the Lanczos relation without products and must still be the true ||A y - theta y||. ARPACK's
    # shortcut |beta_m s_m| drops the full passes' coefficients and misses by up to sqrt(eps)||A||.
    matrix, _ = _clustered_matrix(300, 3)
    op = matrix_operator(jnp.asarray(matrix))
    pairs = nmelab.eigenpairs(op, 6, "both", jax.random.key(6), num_iters=80)
    vectors = np.asarray(pairs.eigenvectors)
    true_res = _residuals(matrix, np.asarray(pairs.eigenvalues), vectors)
    np.testing.assert_allclose(pairs.residual_norms, true_res, rtol=1e-6, atol=1e-13)
    assert pairs.num_matvecs == 80


def test_partial_reorthogonalization_skips_most_full_passes():
    # The point of the method: far fewer full Gram-Schmidt passes than steps.
    from nmelab.estimators import lanczos

    matrix, _ = _clustered_matrix(300, 2)
    op = matrix_operator(jnp.asarray(matrix))
    v0 = jnp.ones(300) / np.sqrt(300)
    state = lanczos.initial_state(v0, 40)
    step = jax.jit(lanczos._lanczos_step, static_argnums=0)
    for j in range(40):
        state, _ = step(("tree",), (op, jax.random.key(0)), state, jnp.asarray(j))
    assert 0 < int(state.num_full) < 20


def test_python_and_compiled_loops_give_the_same_lanczos_on_a_cnn():
    op = cases.operator("hessian", "cnn")
    got = {
        loop: nmelab.eigenpairs(op, 2, "both", jax.random.key(5), num_iters=12, loop=loop)
        for loop in ("compiled", "python")
    }
    scale = float(np.max(np.abs(np.asarray(got["compiled"].eigenvalues))))
    for field in ("eigenvalues", "residual_norms"):
        np.testing.assert_allclose(
            getattr(got["python"], field), getattr(got["compiled"], field), atol=1e-12 * scale
        )
    np.testing.assert_allclose(
        _stacked_flat(got["python"].eigenvectors),
        _stacked_flat(got["compiled"].eigenvectors),
        atol=1e-10,
    )


def test_pytree_path_of_large_models(monkeypatch):
    # Large models run Lanczos on pytrees (no ravel per step); force that path on a small model
    # and compare with the dense twin and with the raveled path.
    from nmelab.estimators import lanczos

    matrix = np.asarray(cases.dense_matrix("nme"))
    exact = np.linalg.eigvalsh(matrix)
    op = cases.operator("nme")
    flat = nmelab.eigenpairs(op, 2, "both", jax.random.key(2), num_iters=op.num_params)
    monkeypatch.setattr(lanczos, "FLAT_MAX_PARAMS", 0)
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
