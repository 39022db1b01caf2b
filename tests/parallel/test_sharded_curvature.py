"""Curvature operators and estimators on a batch sharded over 4 simulated CPU devices.

The checks run in one subprocess (``_parallel_checks.py curvature``) with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``, so this process keeps its single device.
Each compares the single-device result with the result on ``shard_batch``-ed inputs (replicated or
FSDP-sharded params) to float32 tolerance; see the script for the exact quantities.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _parallel_helpers import assert_checks, run_checks

import nmelab.parallel as par


@pytest.fixture(scope="module")
def results():
    return run_checks("curvature")


def test_every_operator_matches_single_device(results):
    names = {
        f"op/{n}"
        for n in (
            "hessian",
            "gauss_newton",
            "nme",
            "fisher",
            "split_product",
            "linearize_split",
            "hessian/fsdp",
        )
    }
    assert_checks(results, "op/", names)


def test_every_estimator_matches_single_device(results):
    names = {
        f"est/{n}"
        for n in (
            "trace_hutchinson_H",
            "trace_split",
            "trace_split/fsdp",
            "diagonal_hutchinson_H",
            "eigenpairs",
            "spectral_density",
            "gn_trace_sampled",
        )
    }
    assert_checks(results, "est/", names)


def test_batchnorm_uses_global_batch_statistics(results):
    # equal to one device, and distinguishable from per-device statistics
    assert_checks(results, "bn/", {"bn/loss_grads_stats", "bn/stats_are_not_per_shard"})


def test_indivisible_batch_is_refused_with_a_clear_error(results):
    assert_checks(results, "errors/", {"errors/shard_batch_not_divisible"})


def test_constrain_batch_splits_batches_built_inside_jit(results):
    # what the trainer relies on: batches gathered by index inside the jitted step
    assert_checks(
        results,
        "constrain/",
        {
            "constrain/splits_batch",
            "constrain/under_vmap",
            "constrain/no_mesh_no_op",
            "constrain/values",
        },
    )


@pytest.mark.slow
def test_other_estimator_methods_fsdp_and_conv_batchnorm():
    results = run_checks("curvature_slow")
    assert_checks(results, "op/")
    assert_checks(
        results,
        "est/",
        {
            f"est/{n}"
            for n in (
                "trace_hutchpp_GN",
                "trace_exact_NME",
                "trace_fisher",
                "diagonal_exact_NME",
                "gn_trace_sampled_per_example",
            )
        },
    )
    assert_checks(
        results,
        "bn_conv/",
        {"bn_conv/hessian", "bn_conv/loss_grads_stats", "bn_conv/stats_are_not_per_shard"},
    )


# ------------------------------------------------------------------------------------------------
# in-process (one device): meshes, placement helpers and their errors


def test_parse_mesh_shape_forms():
    assert par.parse_mesh_shape(None) is None
    assert par.parse_mesh_shape(4) == (4,)
    assert par.parse_mesh_shape("2x2") == (2, 2)
    assert par.parse_mesh_shape("2,1") == (2, 1)
    assert par.parse_mesh_shape([1]) == (1,)
    for bad in (0, "two", (), (2, 0), 1.5, True):
        with pytest.raises(ValueError, match="mesh_shape"):
            par.parse_mesh_shape(bad)


def test_make_mesh_defaults_to_all_devices_with_auto_axes():
    mesh = par.make_mesh()
    assert mesh.axis_names == ("data",)
    assert mesh.shape["data"] == jax.device_count()
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert par.mesh_from_config({"mesh_shape": None}).shape == mesh.shape


def test_make_mesh_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs 8 devices, but only 1"):
        par.make_mesh(8)
    with pytest.raises(ValueError, match="has 2 axes but axis_names"):
        par.make_mesh((1, 1))
    with pytest.raises(ValueError, match="distinct"):
        par.make_mesh((1, 1), ("data", "data"))
    with pytest.raises(ValueError, match="no axis 'data'"):
        par.shard_batch(np.zeros((4, 2)), par.make_mesh(1, ("model",)))
    with pytest.raises(TypeError, match="jax.sharding.Mesh"):
        par.replicate({"w": np.zeros(2)}, "mesh")


def test_largest_divisible_axis():
    assert par.largest_divisible_axis((3, 8, 8), 4) == 1  # first of the largest divisible
    assert par.largest_divisible_axis((12, 8), 4) == 0
    assert par.largest_divisible_axis((3, 5), 4) is None
    assert par.largest_divisible_axis((), 4) is None
    assert par.largest_divisible_axis((2,), 4) is None


def test_placement_keeps_values_on_one_device():
    mesh = par.make_mesh()
    batch = (np.arange(8.0).reshape(4, 2), np.arange(4))
    placed = par.shard_batch(batch, mesh)
    np.testing.assert_array_equal(np.asarray(placed[0]), batch[0])
    assert placed[0].sharding.spec == jax.sharding.PartitionSpec("data")
    params = {"w": np.ones((3, 4)), "b": np.zeros(3)}
    for tree in (par.replicate(params, mesh), par.shard_params(params, mesh)):
        np.testing.assert_array_equal(np.asarray(tree["w"]), params["w"])
    key = par.replicate(jax.random.key(0), mesh)  # typed keys too
    assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    with pytest.raises(ValueError, match="scalar"):
        par.shard_batch((np.zeros(()), np.zeros(())), mesh)
    with pytest.raises(ValueError, match="share the batch size"):
        par.shard_batch((np.zeros((4, 1)), np.zeros(3)), mesh)


def test_constrain_batch_is_identity_without_a_mesh():
    x = np.arange(6.0)
    out = jax.jit(lambda batch: par.constrain_batch(batch, None))(x)
    np.testing.assert_array_equal(np.asarray(out), x)
