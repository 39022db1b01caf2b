"""m-sharpness: regularizers per shard (shard_map) and the factor-of-M trap, on 4 devices.

One subprocess (``_parallel_checks.py msharpness``) checks that

* ``per_shard_map`` gives, for every shard, the single-device gradient and HVP on that shard's
  data - and that the naive ``shard_map`` + ``pmean`` (params not cast to varying) gives exactly
  ``M`` times the global HVP, so the comparison would catch the bug;
* ``per_shard(reg)`` equals the explicit average over shards of the single-device step (key
  ``fold_in(key, s)`` for shard ``s``), equals the global step for ``none`` (and for weight
  noise with a shared key), and differs from it for SAM, USAM, the gradient penalty, weight noise
  and gn_trace - the documented change of the maths;
* it works with train-mode BatchNorm (per-shard statistics, averaged aux) and inside
  ``jit(vmap(...))`` over seeds with per-example aux concatenated.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _parallel_helpers import PER_SHARD_SLOW, REGULARIZER_CONFIGS, assert_checks, run_checks

import nmelab
import nmelab.parallel as par
import nmelab.regularizers as regs


@pytest.fixture(scope="module")
def results():
    return run_checks("msharpness")


def test_per_shard_gradients_and_hvps_are_each_shards_own(results):
    assert_checks(
        results,
        "shard_map/",
        {f"shard_map/{q}/shard{s}" for q in ("grad", "hvp") for s in range(4)},
    )


def test_naive_shard_map_pmean_is_off_by_the_device_count(results):
    assert_checks(
        results, "trap/", {"trap/naive_pmean_hvp_is_wrong", "trap/naive_pmean_hvp_is_M_times"}
    )


def test_per_shard_regularizers_equal_the_explicit_shard_average(results):
    names = [c for c in REGULARIZER_CONFIGS if c not in PER_SHARD_SLOW]
    expected = {f"per_shard/{n}" for n in names}
    expected |= {f"per_shard/{n}_differs_from_global" for n in names if n != "none"}
    expected |= {"per_shard/none_equals_global", "per_shard/weight_noise_shared_key_equals_global"}
    assert_checks(results, "per_shard/", expected)


def test_per_shard_with_batchnorm_and_under_vmap(results):
    assert_checks(results, "per_shard_bn/", {"per_shard_bn/sam"})
    assert_checks(results, "per_shard_vmap/", {"per_shard_vmap/seed0", "per_shard_vmap/seed1"})


@pytest.mark.slow
def test_per_shard_trace_penalties():
    results = run_checks("msharpness_slow")
    names = PER_SHARD_SLOW
    assert_checks(
        results,
        "per_shard/",
        {f"per_shard/{n}" for n in names}
        | {f"per_shard/{n}_differs_from_global" for n in names}
        | {"per_shard/hessian_trace_shared_key_equals_global"},
    )


# ------------------------------------------------------------------------------------------------
# in-process (one device)


def test_per_shard_argument_errors():
    mesh = par.make_mesh()
    sam = regs.get("sam", rho=0.1)
    with pytest.raises(TypeError, match="value_and_grad"):
        par.per_shard(object(), mesh)
    with pytest.raises(TypeError, match="already per-shard"):
        par.per_shard(par.per_shard(sam, mesh), mesh)
    with pytest.raises(ValueError, match="aux_reduction"):
        par.per_shard(sam, mesh, aux_reduction="sum")
    with pytest.raises(ValueError, match="no axis 'batch'"):
        par.per_shard(sam, mesh, axis="batch")
    wrapped = par.per_shard(regs.get("weight_noise", sigma=0.1), mesh)
    assert wrapped.stochastic and wrapped.name == "weight_noise"


def test_per_shard_treedef_tells_wrapped_classes_apart():
    # JAX 0.10.2: register_dataclass treedefs of two classes with the same fields compare equal
    # (a jit cache may then run one class's program for the other); the wrapper must not.
    import dataclasses

    def make(name):
        cls = dataclasses.make_dataclass(name, [("rho", float)], frozen=True)
        cls.value_and_grad = lambda self, *args: None
        jax.tree_util.register_dataclass(cls)
        return cls

    first, second = make("First"), make("Second")
    mesh = par.make_mesh()
    a = jax.tree.structure(par.per_shard(first(0.1), mesh))
    b = jax.tree.structure(par.per_shard(second(0.1), mesh))
    assert a != b


def test_per_shard_on_one_device_is_the_plain_step():
    mesh = par.make_mesh()
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 2))}

    def apply_fn(p, x):
        return jax.numpy.tanh(x @ p["w"])

    objective = nmelab.Objective(apply_fn, "cross_entropy")
    batch = (rng.normal(size=(4, 3)), np.array([0, 1, 1, 0]))
    sam = regs.get("sam", rho=0.2)
    value, grads = par.per_shard(sam, mesh).value_and_grad(objective, params, batch)
    ref_value, ref_grads = sam.value_and_grad(objective, params, batch)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grads["w"], ref_grads["w"], rtol=1e-12)
