"""nmelab.analysis.analyze on a tiny float64 MLP against dense float64 twins."""

import dataclasses
import json

import analysis_cases as cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nmelab
import toy_problems as tp
from nmelab import analysis
from nmelab.curvature import dense
from nmelab.estimators.probes import sample_probe

DENSE = {
    "hessian": dense.dense_hessian,
    "gauss_newton": dense.dense_gauss_newton,
    "nme": dense.dense_nme,
}
NUM_PROBES = cases.NUM_PROBES


@pytest.fixture(scope="module")
def problem():
    return cases.problem()


@pytest.fixture(scope="module")
def matrices(problem):
    return {name: np.asarray(fn(*problem)) for name, fn in DENSE.items()}


@pytest.fixture(scope="module")
def result():
    return cases.result()


def test_exact_traces_diagonal_and_extremes_match_the_dense_matrices(result, matrices):
    assert result.nme_diagonal_exact and result.num_params == matrices["nme"].shape[0]
    for name, matrix in matrices.items():
        eigenvalues = np.linalg.eigvalsh(matrix)
        assert result.exact_traces[name] == pytest.approx(np.trace(matrix), rel=1e-10, abs=1e-12)
        low, high = result.extremes()[name]
        assert low == pytest.approx(eigenvalues[0], abs=1e-8)
        assert high == pytest.approx(eigenvalues[-1], abs=1e-8)
        assert float(np.max(result.eigenpairs[name].residual_norms)) < 1e-6
    diag = np.asarray(ravel_pytree(result.nme_diagonal.value)[0])
    np.testing.assert_allclose(diag, np.diag(matrices["nme"]), rtol=1e-10, atol=1e-13)


def test_traces_are_the_shared_probe_means_of_the_dense_forms(problem, result, matrices):
    trace_key = jax.random.split(jax.random.key(cases.SEED), 5)[0]
    keys = jax.random.split(trace_key, NUM_PROBES)
    probes = np.stack([np.asarray(ravel_pytree(sample_probe(k, problem[1]))[0]) for k in keys])
    for name, est in result.traces.as_dict().items():
        forms = np.einsum("ip,pq,iq->i", probes, matrices[name], probes)
        np.testing.assert_allclose(np.asarray(est.samples), forms, rtol=1e-9, atol=1e-12)
        assert float(est.stderr) == pytest.approx(forms.std(ddof=1) / np.sqrt(NUM_PROBES))
    assert result.split_residual < 1e-12


def test_nme_statistics_and_block_norms_are_those_of_the_dense_nme(problem, result, matrices):
    nme = matrices["nme"]
    expected = nmelab.diagonal_statistics(np.diag(nme))
    found = dataclasses.asdict(result.nme_diagonal_statistics)
    assert found == pytest.approx(dataclasses.asdict(expected), rel=1e-9)
    assert set(result.nme_layer_statistics) == {"[0]", "[1]", "[2]"}
    np.testing.assert_allclose(
        result.nme_block_norms.norms,
        nmelab.block_norms(nmelab.nme(*problem), exact=True).norms,
        rtol=1e-12,
    )
    total = np.sqrt(np.sum(result.nme_block_norms.norms**2))
    assert total == pytest.approx(np.linalg.norm(nme), rel=1e-10)


def test_spectral_densities_integrate_the_dense_spectrum(result, matrices):
    for name, sld in result.spectral_densities.items():
        np.testing.assert_allclose(np.sum(np.asarray(sld.weights), axis=-1), 1.0, rtol=1e-10)
        # with m = P steps the quadrature of each probe is supported on the exact eigenvalues
        eigenvalues = np.linalg.eigvalsh(matrices[name])
        nodes = np.asarray(sld.nodes)[np.asarray(sld.weights) > 1e-8]
        assert np.min(np.abs(nodes[:, None] - eigenvalues[None]), axis=1).max() < 1e-7


def test_to_dict_is_strict_json_and_holds_the_table_values(result):
    record = result.to_dict()
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert record["traces"]["nme"]["exact"] == result.exact_traces["nme"]
    assert record["eigenvalues"]["hessian"]["max"] == result.extremes()["hessian"][1]
    assert record["nme_diagonal"]["statistics"]["fraction_above"] == (
        result.nme_diagonal_statistics.fraction_above
    )
    assert record["gn_trace_sampled"]["estimate"] == float(result.gn_trace_sampled.value)
    table = result.table()
    assert "H = GN + NME" in table and "GN, eq. 20" in table and "[1]" in table
    assert f"{result.exact_traces['gauss_newton']:.4g}" in table


def test_the_same_key_gives_the_same_analysis(problem, result):
    again = analysis.analyze(
        *problem, key=jax.random.key(cases.SEED), num_probes=NUM_PROBES, num_iters=result.num_iters
    )
    assert again.to_dict() == result.to_dict()


@pytest.mark.slow  # a second objective: compiles every estimator again
def test_estimated_diagonal_and_mse_loss(matrices):
    objective, params, batch = tp.mlp_problem("gelu", loss="mse", sizes=(4, 5, 4, 3), num=6)
    found = analysis.analyze(
        objective,
        params,
        batch,
        key=jax.random.key(0),
        num_probes=4,
        num_iters=6,
        exact_diagonal=False,
    )
    assert not found.nme_diagonal_exact and found.exact_traces is None
    assert found.gn_trace_sampled is None and found.to_dict()["gn_trace_sampled"] is None
    assert "Hutchinson" in found.table() and "eq. 20" not in found.table()


def test_bad_arguments_name_the_argument(problem):
    with pytest.raises(ValueError, match="num_probes"):
        analysis.analyze(*problem, key=jax.random.key(0), num_probes=1)
    with pytest.raises(TypeError, match="exact_diagonal"):
        analysis.analyze(*problem, key=jax.random.key(0), exact_diagonal="yes")
    with pytest.raises(TypeError, match="key"):
        analysis.analyze(*problem, key=None)
    with pytest.raises(TypeError, match="objective"):
        analysis.analyze(lambda p, x: x, problem[1], problem[2], key=jax.random.key(0))


def test_nme_diagonal_exact_and_estimated(problem, matrices):
    exact, is_exact = analysis.nme_diagonal(*problem)
    assert is_exact
    np.testing.assert_allclose(
        ravel_pytree(exact.value)[0], np.diag(matrices["nme"]), rtol=1e-10, atol=1e-13
    )
    estimated, is_exact = analysis.nme_diagonal(
        *problem, key=jax.random.key(1), num_probes=400, exact=False
    )
    assert not is_exact
    # Hutchinson: per-entry stderr from the samples; 6 sigma over 64 entries
    error = ravel_pytree(estimated.value)[0] - jnp.diag(matrices["nme"])
    assert np.all(np.abs(error) <= 6 * ravel_pytree(estimated.stderr)[0] + 1e-12)
