"""The interface every regularizer shares: g = 0, jit without recompilation, vmap over ρ, aux."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from regularizer_helpers import (
    STRENGTH,
    all_regularizers,
    dense_hessian,
    dense_value_grad,
    flat,
    problem_for,
    run,
)

import nmelab
import toy_problems
from nmelab import regularizers

REGULARIZERS = all_regularizers()


def test_names_are_registered_in_order():
    assert regularizers.NAMES == (
        "none",
        "gradient_penalty",
        "sam",
        "usam",
        "weight_noise",
        "hessian_trace",
        "nme_trace",
        "gn_trace",
    )
    for name in regularizers.NAMES:
        assert (
            regularizers.get(name, **({STRENGTH[name]: 0.1} if STRENGTH[name] else {})).name == name
        )


def test_every_direction_is_finite_where_the_gradient_is_exactly_zero():
    # Zero last layer, identical inputs and balanced labels over K = 2 classes: softmax(0) = 1/2
    # and every partial sum of ±h/2 is exact, so the gradient is exactly 0 while H is not.
    _, params, _ = toy_problems.mlp_problem("tanh", sizes=(3, 5, 2), num=4)
    params[-1] = {"w": jnp.zeros((5, 2)), "b": jnp.zeros(2)}
    batch = (jnp.zeros((8, 3)), jnp.array([0, 1, 1, 0, 1, 0, 0, 1]))
    objective = nmelab.Objective(toy_problems.mlp_apply_fn("tanh"))
    _, g = dense_value_grad(objective, params, batch)
    assert np.all(np.asarray(g) == 0)
    assert np.abs(dense_hessian(objective, params, batch)).max() > 0

    @jax.jit
    def directions(key):
        return [flat(r.value_and_grad(objective, params, batch, key)[1]) for r in REGULARIZERS]

    for reg, direction in zip(REGULARIZERS, directions(jax.random.key(0)), strict=True):
        assert np.all(np.isfinite(direction)), reg
        if reg.name in ("gradient_penalty", "sam", "usam"):
            assert np.all(np.asarray(direction) == 0), reg  # g/‖g‖ := 0 at g = 0


def test_one_compiled_step_serves_every_strength():
    objective, params, batch = problem_for("tanh")

    @jax.jit
    def step(reg, key):
        return reg.value_and_grad(objective, params, batch, key)

    key = jax.random.key(0)
    for template in REGULARIZERS:
        field = STRENGTH[template.name]
        if field is None:
            continue
        static = {k: getattr(template, k) for k in template.hyperparameters() if k != field}
        step(template, key)
        before = step._cache_size()
        outs = [
            step(regularizers.get(template.name, **static, **{field: s}), key)
            for s in (0.05, 1, 2.5)
        ]
        assert step._cache_size() == before, template
        assert not np.allclose(flat(outs[0][1]), flat(outs[2][1])), template


def test_regularizers_of_different_classes_never_share_a_compiled_step():
    # hessian_trace and nme_trace have the same static fields; their treedefs must still differ,
    # or a jitted step may reuse the other's executable (see base._register_pytree).
    objective, params, batch = problem_for("tanh")
    key = jax.random.key(3)
    trace = regularizers.get("hessian_trace", sigma=0.7, num_probes=2)
    nme = regularizers.get("nme_trace", sigma=0.7, num_probes=2)
    assert jax.tree.structure(trace) != jax.tree.structure(nme)

    @jax.jit
    def step(reg):
        return reg.value_and_grad(objective, params, batch, key)[0]

    want_trace = run(trace, objective, params, batch, key)[0]  # separately compiled
    want_nme = run(nme, objective, params, batch, key)[0]
    assert abs(want_trace - want_nme) > 0.1
    for _ in range(3):
        np.testing.assert_allclose(step(trace), want_trace, rtol=1e-12)
        np.testing.assert_allclose(step(nme), want_nme, rtol=1e-12)


def test_vmap_over_a_stacked_strength_matches_separate_calls():
    objective, params, batch = problem_for("tanh")
    rhos = jnp.array([0.0, 0.1, 0.4])
    stacked = regularizers.GradientPenalty(rho=rhos, p=1)
    axes = regularizers.GradientPenalty(rho=0, p=1)  # the in_axes prefix: ρ batched on axis 0
    values, grads = jax.vmap(lambda r: r.value_and_grad(objective, params, batch), in_axes=(axes,))(
        stacked
    )
    for i, rho in enumerate(rhos):
        reg = regularizers.get("gradient_penalty", rho=float(rho))
        value, want = run(reg, objective, params, batch)
        np.testing.assert_allclose(values[i], value, rtol=1e-12)
        got = flat(jax.tree.map(lambda leaf, i=i: leaf[i], grads))
        np.testing.assert_allclose(got, flat(want), rtol=1e-11, atol=1e-14)


def _batchnorm_like_problem():
    """The tanh MLP whose aux is a statistic of its hidden layer, so it changes with the params."""
    objective, params, batch = problem_for("tanh")
    plain = objective.apply_fn

    def apply_fn(p, x):
        hidden = x @ p[0]["w"] + p[0]["b"]
        return plain(p, x), {"stat": jnp.mean(hidden, axis=0)}

    return nmelab.Objective(apply_fn, has_aux=True), objective, params, batch


def test_objectives_with_aux_return_the_clean_pass_statistics():
    with_aux, without_aux, params, batch = _batchnorm_like_problem()
    key = jax.random.key(9)
    clean_aux = with_aux.value_and_aux(params, batch)[1]
    supported = [r for r in REGULARIZERS if getattr(r, "form", None) != "per_example"]

    @jax.jit
    def both(key):
        return (
            [r.value_and_grad(with_aux, params, batch, key) for r in supported],
            [r.value_and_grad(without_aux, params, batch, key) for r in supported],
        )

    results, references = both(key)
    vec, unravel = ravel_pytree(params)
    for reg, ((value, aux), grads), (ref_value, ref_grads) in zip(
        supported, results, references, strict=True
    ):
        np.testing.assert_allclose(aux["stat"], clean_aux["stat"], rtol=1e-14, err_msg=reg.name)
        np.testing.assert_allclose(value, ref_value, rtol=1e-13, err_msg=reg.name)
        np.testing.assert_allclose(flat(grads), flat(ref_grads), rtol=1e-12, atol=1e-14)
        if reg.name in ("sam", "usam", "weight_noise"):
            # the perturbed pass saw other statistics, which were discarded
            shifted = with_aux.value_and_aux(unravel(vec + 0.3 * flat(grads)), batch)[1]
            assert not np.allclose(shifted["stat"], clean_aux["stat"])


def test_per_example_gn_trace_refuses_objectives_with_aux():
    with_aux, _, params, batch = _batchnorm_like_problem()
    reg = regularizers.get("gn_trace", sigma=0.1, form="per_example")
    with pytest.raises(ValueError, match="per_example.*minibatch"):
        reg.value_and_grad(with_aux, params, batch, jax.random.key(0))


@pytest.mark.slow
def test_float32_params_give_float32_directions():
    objective, params, batch = problem_for("tanh")
    params32 = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), params)
    batch32 = (batch[0].astype(jnp.float32), batch[1])

    @jax.jit
    def all_steps(key):
        return [r.value_and_grad(objective, params32, batch32, key) for r in REGULARIZERS]

    for reg, (value, grads) in zip(REGULARIZERS, all_steps(jax.random.key(0)), strict=True):
        assert value.dtype == jnp.float32, reg
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(grads)), reg
        assert np.all(np.isfinite(flat(grads))), reg


def test_legacy_uint32_keys_work():
    objective, params, batch = problem_for("tanh")
    reg = regularizers.get("weight_noise", sigma=0.1)
    new = run(reg, objective, params, batch, jax.random.key(1))
    old = run(reg, objective, params, batch, jax.random.PRNGKey(1))
    np.testing.assert_allclose(flat(new[1]), flat(old[1]))
