"""Stochastic Lanczos quadrature: weights are squared FIRST COMPONENTS, moments, normalisation."""

import estimator_cases as cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nmelab
from nmelab.estimators import matrix_operator, probes
from nmelab.estimators.lanczos import lanczos_tridiagonal, tridiagonal_matrix


def _normalized_probes(key, params, num):
    vs = np.stack(
        [
            np.asarray(ravel_pytree(probes.sample_probe(k, params))[0])
            for k in probes.probe_keys(key, num)
        ]
    )
    return vs / np.linalg.norm(vs, axis=1, keepdims=True)


@pytest.mark.parametrize("name", ["hessian", "nme"])
def test_quadrature_moments_equal_quadratic_forms_on_the_same_probes(name):
    # Gauss quadrature with m nodes is exact for degree < 2m: Σ τ = 1, Σ τθ = v̂ᵀAv̂, Σ τθ² = ‖Av̂‖²,
    # Σ τθ³ = v̂ᵀA³v̂, for every probe, on the documented probes.
    matrix = np.asarray(cases.dense_matrix(name))
    op = cases.operator(name)
    key = jax.random.key(0)
    sld = nmelab.spectral_density(op, key, 6, 8)
    assert sld.nodes.shape == sld.weights.shape == (6, 8) and sld.num_matvecs == 48
    vs = _normalized_probes(key, op.params, 6)
    scale = np.max(np.abs(np.linalg.eigvalsh(matrix)))
    for power in range(4):
        expect = np.einsum("ij,ij->i", vs @ np.linalg.matrix_power(matrix, power), vs)
        np.testing.assert_allclose(sld.moment(power), expect, rtol=0, atol=1e-10 * scale**power)
    assert np.all(np.asarray(sld.weights) >= 0)


def test_first_component_weights_not_first_eigenvector_nor_unsquared():
    # The tests above have power: the PyHessian-style alternatives fail the moment identity
    # although their weights may still sum to one.
    matrix = np.asarray(cases.dense_matrix("hessian"))
    v = _normalized_probes(jax.random.key(0), cases.operator("hessian").params, 1)[0]
    alphas, betas, _ = lanczos_tridiagonal(
        matrix_operator(jnp.asarray(matrix)), "tree", jnp.asarray(v), 8, jax.random.key(1)
    )
    theta, s = np.linalg.eigh(np.asarray(tridiagonal_matrix(alphas, betas)))
    first = v @ matrix @ v
    right = s[0, :] ** 2
    assert abs(np.sum(right * theta) - first) < 1e-12 * np.max(np.abs(theta))
    for wrong in (s[:, 0] ** 2, s[0, :]):
        assert abs(np.sum(wrong * theta) - first) > 1e-3 * np.max(np.abs(theta))
    assert abs(np.sum(s[:, 0] ** 2) - 1) < 1e-12  # "sums to one" cannot tell them apart


def test_full_lanczos_recovers_the_exact_spectral_measure_of_the_probe():
    # With m = P the nodes are all eigenvalues and the weights (u_iᵀv̂)² of the probe.
    matrix = np.asarray(cases.dense_matrix("gauss_newton"))
    op = cases.operator("gauss_newton")
    size = op.num_params
    key = jax.random.key(5)
    sld = nmelab.spectral_density(op, key, 1, size)
    values, vectors = np.linalg.eigh(matrix)
    v = _normalized_probes(key, op.params, 1)[0]
    expect = (vectors.T @ v) ** 2
    # GN has a large null space: compare the measure through its action on test functions.
    grid = np.linspace(values[0] - 1, values[-1] + 1, 7)
    for c in grid:
        f = np.exp(-((values - c) ** 2))
        got = np.sum(np.asarray(sld.weights[0]) * np.exp(-((np.asarray(sld.nodes[0]) - c) ** 2)))
        assert abs(got - np.sum(expect * f)) < 1e-9
    np.testing.assert_allclose(np.sort(np.asarray(sld.nodes[0])), values, atol=1e-9 * values[-1])


def test_moments_over_probes_estimate_normalized_traces():
    matrix = np.asarray(cases.dense_matrix("hessian", "cnn"))
    op = cases.operator("hessian", "cnn")
    size = op.num_params
    sld = nmelab.spectral_density(op, jax.random.key(2), 60, 10)
    for power, truth in ((1, np.trace(matrix) / size), (2, np.sum(matrix**2) / size)):
        samples = np.asarray(sld.moment(power))
        stderr = samples.std(ddof=1) / np.sqrt(len(samples))
        assert abs(samples.mean() - truth) < 4 * stderr


def test_density_integrates_to_one_and_is_comparable_across_operators():
    op = cases.operator("nme")
    sld = nmelab.spectral_density(op, jax.random.key(0), 4, 10)
    sigma = 0.02
    grid = sld.grid(4000, sigma)
    density = np.asarray(nmelab.density_on_grid(sld, grid, sigma))
    assert np.all(density >= 0)
    assert abs(np.trapezoid(density, grid) - 1.0) < 1e-6
    np.testing.assert_allclose(sld.density(grid, sigma), density)
    # The mean of the smoothed density is the first moment (σ does not shift it).
    mean = np.trapezoid(grid * density, grid)
    assert abs(mean - float(np.mean(sld.moment(1)))) < 1e-6


def test_breakdown_gives_zero_weight_to_restarted_blocks():
    # A 3-point spectrum: after 3 steps the Krylov space of any probe is exhausted.
    spectrum = np.repeat([-1.0, 0.5, 2.0], 4)
    op = matrix_operator(jnp.diag(jnp.asarray(spectrum)))
    sld = nmelab.spectral_density(op, jax.random.key(0), 3, 8)
    assert np.all(np.isfinite(np.asarray(sld.nodes)))
    np.testing.assert_allclose(np.sum(sld.weights, axis=1), 1.0, atol=1e-12)
    heavy = np.asarray(sld.nodes)[np.asarray(sld.weights) > 1e-10]
    assert np.min(np.abs(heavy[:, None] - np.array([-1.0, 0.5, 2.0])[None]), axis=1).max() < 1e-10
    # Rademacher probes give each eigenvalue weight (multiplicity/P) exactly.
    for value in (-1.0, 0.5, 2.0):
        mass = np.sum(np.where(np.abs(np.asarray(sld.nodes) - value) < 1e-8, sld.weights, 0), 1)
        np.testing.assert_allclose(mass, 4 / 12, atol=1e-10)


def test_spectral_density_bad_inputs():
    op = cases.operator("hessian")
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_probes must be an integer >= 1, got 0"):
        nmelab.spectral_density(op, key, 0, 5)
    with pytest.raises(ValueError, match="num_iters must be an integer >= 1, got 0"):
        nmelab.spectral_density(op, key, 2, 0)
    with pytest.raises(ValueError, match="probe must be one of"):
        nmelab.spectral_density(op, key, 2, 5, probe="hadamard")
    sld = nmelab.spectral_density(matrix_operator(jnp.eye(3)), key, 1, 2)
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        nmelab.density_on_grid(sld, np.linspace(0, 2, 5), 0.0)
    with pytest.raises(ValueError, match="grid must be one-dimensional"):
        nmelab.density_on_grid(sld, np.zeros((2, 2)), 0.1)
