"""Curvature tracking: records at the right steps, tr H = tr GN + tr NME, dense float64 twins."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import tiny_config

from nmelab.curvature import dense
from nmelab.estimators import diagonal_statistics
from nmelab.objective import Objective
from nmelab.train import build_run, restore_state, train_and_evaluate
from nmelab.train.metrics_io import read_jsonl
from nmelab.train.tracking import DIAGONAL_FIELDS


def _f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _seed(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def _check_split_identity(record):
    for i in range(len(record["trace_hessian"])):
        h, gn, nme = (record[f"trace_{k}"][i] for k in ("hessian", "gauss_newton", "nme"))
        # shared probes: the identity holds probe by probe, up to float32 rounding
        assert abs(h - (gn + nme)) <= 1e-5 * (abs(gn) + abs(nme)) + 1e-6
        assert gn >= 0  # every probe's vᵀ GN v is >= 0
        for k in ("hessian", "gauss_newton", "nme"):
            assert record[f"trace_{k}_stderr"][i] > 0


def test_tracking_matches_dense_float64_curvature(tmp_path):
    config = tiny_config(
        num_seeds=2,
        activation="gelu",
        **{
            "curvature.every_steps": 4,
            "curvature.num_probes": 64,
            "curvature.probe_batch_size": 24,
            "curvature.lanczos_iters": 60,
            "curvature.exact_diagonal": True,
            "curvature.fidelity_rhos": (0.01, 0.1),
        },
    )
    summary = train_and_evaluate(config, tmp_path)
    records = read_jsonl(tmp_path / "curvature.jsonl")
    assert [r["step"] for r in records] == [0, 4, 8]
    for record in records:
        _check_split_identity(record)
        assert record["probe_batch_size"] == 24 and record["diverged"] == [False, False]
        for name in ("hessian", "gauss_newton", "nme"):
            cosines = np.asarray(record[f"fidelity_{name}_cosine"])
            assert cosines.shape == (2, 2) and np.all(np.abs(cosines) <= 1 + 1e-6)
    # the curvature changes as the model trains
    assert records[0]["trace_gauss_newton"] != records[-1]["trace_gauss_newton"]

    # the last record was measured on the final weights: compare with dense float64 matrices
    run = build_run(config)
    state = restore_state(config, tmp_path)
    x, y = run.source.probe_batch(24)
    batch = (jnp.asarray(x, jnp.float64), jnp.asarray(y))
    last = records[-1]
    assert last["step"] == summary["steps"]
    objective = Objective(run.eval_apply_fn({}), "cross_entropy")
    dense_hessian = jax.jit(dense.dense_hessian, static_argnums=0)
    dense_gauss_newton = jax.jit(dense.dense_gauss_newton, static_argnums=0)
    for i in range(2):
        params = _f64(_seed(state.params, i))
        hessian = dense_hessian(objective, params, batch)
        gauss_newton = dense_gauss_newton(objective, params, batch)
        # NME = H - GN (eq. 2; the identity itself is tested in tests/curvature)
        matrices = {"hessian": hessian, "gauss_newton": gauss_newton, "nme": hessian - gauss_newton}
        np.testing.assert_allclose(last["loss"][i], objective.value(params, batch), rtol=1e-5)
        for name, matrix in matrices.items():
            exact = float(jnp.trace(matrix))
            stderr = last[f"trace_{name}_stderr"][i]
            assert abs(last[f"trace_{name}"][i] - exact) <= 4 * stderr + 1e-4 * abs(exact), name
        top = float(jnp.linalg.eigvalsh(matrices["hessian"])[-1])
        assert last["lambda_max"][i] == pytest.approx(top, rel=1e-3)
        stats = diagonal_statistics(jnp.diag(matrices["nme"]))
        for field in ("max_abs", "mean_abs", "top_k_share"):
            assert last[f"nme_diag_{field}"][i] == pytest.approx(getattr(stats, field), rel=1e-3)
        assert set(DIAGONAL_FIELDS) <= {k[len("nme_diag_") :] for k in last if "nme_diag" in k}


def test_relu_mlp_has_an_exactly_zero_nme_diagonal(tmp_path):
    """ReLU'' = 0: every within-layer NME block of a ReLU MLP vanishes (App. A.2)."""
    config = tiny_config(
        num_epochs=1.0,
        **{
            "curvature.every_steps": 4,
            "curvature.num_probes": 4,
            "curvature.probe_batch_size": 16,
            "curvature.lanczos_iters": 10,
            "curvature.exact_diagonal": True,
        },
    )
    train_and_evaluate(config, tmp_path)
    for record in read_jsonl(tmp_path / "curvature.jsonl"):
        assert record["nme_diag_max_abs"] == [0.0]
        assert record["nme_diag_fraction_above"] == [0.0]
        _check_split_identity(record)


def test_tracking_config_errors(tmp_path):
    bad = {"curvature.num_probes": 1, "curvature.fidelity_rhos": (0.1, -1.0)}
    for key, value in bad.items():
        config = tiny_config(**{"curvature.every_steps": 1, key: value})
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            train_and_evaluate(config, tmp_path)
        assert not (tmp_path / "config.json").exists()


@pytest.mark.slow
def test_batchnorm_model_is_tracked_in_eval_mode(tmp_path):
    config = tiny_config(
        dataset_kwargs={"shape": (6, 6, 3), "num_train": 32, "num_test": 16},
        model="cnn_bn_tiny",
        activation="gelu",
        batch_size=8,
        num_epochs=1.0,
        **{
            "curvature.every_steps": 4,
            "curvature.num_probes": 32,
            "curvature.probe_batch_size": 16,
            "curvature.lanczos_iters": 40,
        },
    )
    train_and_evaluate(config, tmp_path)
    run = build_run(config)
    state = restore_state(config, tmp_path)
    record = read_jsonl(tmp_path / "curvature.jsonl")[-1]
    _check_split_identity(record)
    x, y = run.source.probe_batch(16)
    batch = (jnp.asarray(x, jnp.float64), jnp.asarray(y))
    params, stats = _f64(_seed(state.params, 0)), _f64(_seed(state.batch_stats, 0))
    objective = Objective(run.eval_apply_fn(stats), "cross_entropy")
    exact = float(
        jnp.trace(jax.jit(dense.dense_hessian, static_argnums=0)(objective, params, batch))
    )
    assert abs(record["trace_hessian"][0] - exact) <= 4 * record["trace_hessian_stderr"][0] + 1e-4
    assert math.isfinite(record["lambda_max"][0])
