"""NME-diagonal statistics and per-layer block norms, against numpy/scipy and the dense twins."""

import estimator_cases as cases
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import nmelab
import toy_problems as tp
from nmelab.estimators import param_groups


def test_statistics_match_independent_formulas():
    rng = np.random.default_rng(0)
    d = {"a": rng.standard_t(3, size=(30, 4)), "b": np.concatenate([np.zeros(70), [50.0, -20.0]])}
    flat = np.concatenate([d["a"].ravel(), d["b"]])
    stats = nmelab.diagonal_statistics(d, tol=1e-2, top_k=5)
    assert stats.num_entries == 192 and stats.top_k == 5
    assert stats.max_abs == 50.0 and np.isclose(stats.mean_abs, np.mean(np.abs(flat)))
    assert np.isclose(stats.threshold, 0.5)
    assert np.isclose(stats.fraction_above, np.mean(np.abs(flat) > 0.5))
    assert np.isclose(stats.kurtosis, scipy.stats.kurtosis(flat, fisher=True, bias=True))
    top = np.sort(np.abs(flat))[-5:].sum() / np.abs(flat).sum()
    assert np.isclose(stats.top_k_share, top)
    absolute = nmelab.diagonal_statistics(d, tol=1.0, relative=False)
    assert absolute.threshold == 1.0
    assert np.isclose(absolute.fraction_above, np.mean(np.abs(flat) > 1.0))
    assert absolute.top_k == 2  # ceil(1% of 192)


def test_one_spike_and_a_flat_diagonal():
    spike = np.zeros(100)
    spike[7] = 3.0
    stats = nmelab.diagonal_statistics(spike, top_k=1)
    assert stats.fraction_above == 0.01 and stats.top_k_share == 1.0
    assert np.isclose(stats.kurtosis, scipy.stats.kurtosis(spike))
    flat = nmelab.diagonal_statistics(np.full(100, -2.0), top_k=10)
    assert flat.fraction_above == 1.0 and np.isclose(flat.top_k_share, 0.1)
    assert np.isnan(flat.kurtosis)  # zero variance


def test_per_layer_statistics_and_groups():
    _, params, _ = cases.problem()
    groups = param_groups(params, "layer")
    assert [name for name, _ in groups] == ["0", "1", "2"]
    leaves = param_groups(params, "leaf")
    assert [name for name, _ in leaves][:2] == ["0/b", "0/w"]
    sizes = [len(index) for _, index in groups]
    assert sum(sizes) == cases.operator("nme").num_params
    assert np.array_equal(np.sort(np.concatenate([i for _, i in groups])), np.arange(sum(sizes)))
    diag = nmelab.diagonal(cases.operator("nme"), exact=True)
    per_layer = nmelab.diagonal_statistics(diag, by="layer")
    assert list(per_layer) == ["0", "1", "2"]
    assert per_layer["0"].num_entries == sizes[0]
    # The last layer enters z linearly: its NME diagonal is zero.
    assert per_layer["2"].max_abs == 0.0 and per_layer["2"].fraction_above == 0.0


def test_relu_nme_diagonal_is_all_zero_statistics():
    diag = nmelab.diagonal(cases.operator("nme", "mlp", "relu"), exact=True)
    stats = nmelab.diagonal_statistics(diag)
    assert stats.fraction_above == 0.0 and stats.max_abs == 0.0
    assert np.isnan(stats.kurtosis) and np.isnan(stats.top_k_share)


def test_beta_gelu_nme_diagonal_grows_sparse_and_spiky():
    # Section 4.3 on a fixed random MLP: from β = 1 to β = 100 fewer entries exceed 1e-3 of the max,
    # the kurtosis and the top-1% share grow.
    activations = pytest.importorskip("nmelab.activations")
    _, params, batch = tp.mlp_problem("tanh", sizes=(6, 16, 16, 3), num=32, seed=1)
    stats = {}
    for beta in (1.0, 100.0):
        objective = nmelab.Objective(tp.mlp_apply_fn(activations.get("beta_gelu", beta=beta)))
        diag = nmelab.diagonal(nmelab.nme(objective, params, batch), exact=True)
        stats[beta] = nmelab.diagonal_statistics(diag)
    assert stats[100.0].fraction_above < 0.7 * stats[1.0].fraction_above
    assert stats[100.0].kurtosis > 5 * stats[1.0].kurtosis
    assert stats[100.0].top_k_share > 2 * stats[1.0].top_k_share


def _dense_block_norms(matrix, groups):
    return np.array([[np.linalg.norm(matrix[np.ix_(a, b)]) for _, b in groups] for _, a in groups])


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_exact_block_norms_and_relu_within_layer_zeros(activation):
    op = cases.operator("nme", "mlp", activation)
    matrix = np.asarray(cases.dense_matrix("nme", "mlp", activation))
    blocks = nmelab.block_norms(op)
    assert blocks.exact and blocks.names == ("0", "1", "2")
    groups = param_groups(op.params, "layer")
    np.testing.assert_allclose(blocks.norms, _dense_block_norms(matrix, groups), atol=1e-12)
    off_diagonal = blocks.norms[~np.eye(3, dtype=bool)]
    assert np.all(off_diagonal > 1e-3)  # cross-layer blocks are not zero
    if activation == "relu":  # App. A.2: within-layer NME blocks vanish exactly
        assert np.max(np.diag(blocks.norms)) <= 1e-14
    else:
        assert blocks.norms[0, 0] > 1e-3 and blocks.norms[2, 2] <= 1e-14


def test_estimated_block_norms_within_variance_derived_tolerance():
    op = cases.operator("hessian")
    exact = nmelab.block_norms(op, by="leaf", exact=True)
    est = nmelab.block_norms(op, by="leaf", exact=False, key=jax.random.key(0), num_probes=64)
    assert not est.exact and est.num_matvecs == 6 * 64 and est.names == exact.names
    z = (est.squared_norms - exact.squared_norms) / est.squared_stderr
    assert np.all(np.abs(z[np.isfinite(z)]) < 4.5)  # 36 entries
    # Entries with zero stderr are exact (e.g. blocks that vanish).
    zero = est.squared_stderr == 0
    np.testing.assert_allclose(est.squared_norms[zero], exact.squared_norms[zero], atol=1e-12)
    np.testing.assert_allclose(est.norms, np.sqrt(est.squared_norms))


def test_diagnostics_bad_inputs():
    with pytest.raises(ValueError, match="tol must be a number > 0"):
        nmelab.diagonal_statistics(np.ones(3), tol=0.0)
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        nmelab.diagonal_statistics(np.ones(3), top_k=0)
    with pytest.raises(ValueError, match="by must be one of"):
        nmelab.diagonal_statistics(np.ones(3), by="block")
    with pytest.raises(ValueError, match="no array leaves"):
        nmelab.diagonal_statistics({})
    with pytest.raises(TypeError, match="key"):
        nmelab.block_norms(cases.operator("hessian"), exact=False)
    with pytest.raises(TypeError, match="op must be an nmelab operator"):
        nmelab.block_norms(jnp.eye(2))
