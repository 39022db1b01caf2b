"""Each regularizer's direction and value against an independent dense float64 closed form.

Deterministic regularizers, and the stochastic trace penalties for the probes a key draws. Expected
values over keys are tested in test_regularizer_estimators.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from regularizer_helpers import (
    activation_cases,
    dense_hessian,
    dense_value_grad,
    flat,
    problem_for,
    quadratic_form_gradient,
    run,
)

import nmelab
import toy_problems
from nmelab import regularizers
from nmelab.curvature import dense, nme_vector_product
from nmelab.estimators.probes import probe_keys, sample_probe


def test_none_is_the_plain_gradient():
    objective, params, batch = problem_for("tanh")
    value, grads = run(regularizers.get("none"), objective, params, batch)
    ref_value, ref_grad = dense_value_grad(objective, params, batch)
    np.testing.assert_allclose(value, ref_value, rtol=1e-13)
    np.testing.assert_allclose(flat(grads), ref_grad, rtol=1e-12, atol=1e-14)


def _check_gradient_penalty(objective, params, batch, rho, p):
    value, grads = run(regularizers.get("gradient_penalty", rho=rho, p=p), objective, params, batch)
    loss, g = dense_value_grad(objective, params, batch)
    hess = dense_hessian(objective, params, batch)
    norm = jnp.linalg.norm(g)
    if p == 1:
        want, want_value = g + rho * hess @ g / norm, loss + rho * norm
    else:
        want, want_value = g + 2 * rho * hess @ g, loss + rho * norm**2
    np.testing.assert_allclose(flat(grads), want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)


@pytest.mark.parametrize(
    "activation", activation_cases(default=("tanh", "relu", "nmelab-augmented_relu"))
)
def test_gradient_penalty_p1_matches_dense_closed_form(activation):
    # direction g + ρ·H·g/‖g‖ (eq. 8), value L + ρ‖g‖
    _check_gradient_penalty(*problem_for(activation), rho=0.3, p=1)


@pytest.mark.parametrize("activation", activation_cases(default=("tanh",)))
def test_gradient_penalty_p2_matches_dense_closed_form(activation):
    # direction g + 2ρ·H·g, value L + ρ‖g‖²
    _check_gradient_penalty(*problem_for(activation), rho=0.3, p=2)


@pytest.mark.slow
def test_gradient_penalty_on_a_cnn():
    objective, params, batch = toy_problems.cnn_problem("gelu", num=2)
    _check_gradient_penalty(objective, params, batch, rho=0.2, p=1)


@pytest.mark.parametrize("activation", activation_cases(default=("tanh", "relu")))
@pytest.mark.parametrize("name", ["sam", "usam"])
def test_sam_is_the_gradient_at_the_perturbed_point(activation, name):
    # eq. 42 / 43: ∇L(θ + ε), ε = ρg/‖g‖ or ρg held fixed; value L(θ + ε)
    objective, params, batch = problem_for(activation)
    rho = 0.25
    value, grads = run(regularizers.get(name, rho=rho), objective, params, batch)
    vec, unravel = ravel_pytree(params)
    _, g = dense_value_grad(objective, params, batch)
    step = rho * g / jnp.linalg.norm(g) if name == "sam" else rho * g
    want_value, want = dense_value_grad(objective, unravel(vec + step), batch)
    np.testing.assert_allclose(flat(grads), want, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(value, want_value, rtol=1e-13)


def _sam_vs_penalty_error(objective, params, batch, rho):
    _, sam_dir = run(regularizers.get("sam", rho=rho), objective, params, batch)
    _, g = dense_value_grad(objective, params, batch)
    hess = dense_hessian(objective, params, batch)
    return float(jnp.linalg.norm(flat(sam_dir) - (g + rho * hess @ g / jnp.linalg.norm(g))))


@pytest.mark.parametrize(
    "activation", ["tanh", pytest.param("gelu", marks=pytest.mark.slow), "relu"]
)
def test_sam_approaches_the_p1_penalty_at_second_order(activation):
    # App. B.2: ∇L(θ + ρu) = g + ρHu + O(ρ²), so halving ρ divides the error by 4. ReLU too, as
    # long as no kink is crossed: inside one linear region the network is smooth.
    objective, params, batch = problem_for(activation)
    rho = 1e-3
    err, err_half = (_sam_vs_penalty_error(objective, params, batch, r) for r in (rho, rho / 2))
    assert err > 0
    assert 3.6 < err / err_half < 4.4, (err, err_half)


def _relu_patterns(params, x):
    h, patterns = x, []
    for layer in params[:-1]:
        pre = h @ layer["w"] + layer["b"]
        patterns.append(np.asarray(pre > 0).ravel())
        h = jax.nn.relu(pre)
    return np.concatenate(patterns)


def test_sam_departs_from_the_penalty_across_a_relu_kink():
    # Put one first-layer unit at a small margin so that the SAM step of radius ρ* crosses its kink.
    # Below ρ* the error is O(ρ²); above it ∇L has jumped, which the AD Hessian cannot see, so the
    # error is of the size of the jump, not O(ρ²).
    objective, params, batch = toy_problems.mlp_problem("relu", sizes=(3, 6, 3), num=4, seed=3)
    x = batch[0]
    crossing = 0.02
    for _ in range(8):  # fixed point: the SAM direction depends on the bias being tuned
        _, g = dense_value_grad(objective, params, batch)
        u = ravel_pytree(params)[1](g / jnp.linalg.norm(g))
        slope = x @ u[0]["w"] + u[0]["b"]
        pre = x @ params[0]["w"] + params[0]["b"]
        n, j = np.unravel_index(np.argmax(np.abs(slope)), slope.shape)
        params[0]["b"] = params[0]["b"].at[j].add(-crossing * slope[n, j] - pre[n, j])
    vec, unravel = ravel_pytree(params)
    _, g = dense_value_grad(objective, params, batch)
    unit = g / jnp.linalg.norm(g)
    small, large = crossing / 4, 2 * crossing
    base = _relu_patterns(params, x)
    assert np.array_equal(base, _relu_patterns(unravel(vec + small * unit), x)), "kink before ρ*/4"
    assert not np.array_equal(base, _relu_patterns(unravel(vec + large * unit), x)), "no kink"

    err_small = _sam_vs_penalty_error(objective, params, batch, small)
    err_large = _sam_vs_penalty_error(objective, params, batch, large)
    # O(ρ²) would give err_large / err_small = (large / small)² = 64
    assert err_large / err_small > 20 * (large / small) ** 2, (err_small, err_large)


# --------------------------------------------------------------------------------------------
# trace penalties, for the drawn probes
# --------------------------------------------------------------------------------------------

TRACE_MATRICES = {"hessian_trace": dense.dense_hessian, "nme_trace": dense.dense_nme}


def _check_trace_penalty(name, objective, params, batch, key, num_probes, probe, sigma=0.7):
    # for fixed probes v_s: direction ∇L + (σ²/2)(1/S)Σ_s ∇_θ(v_sᵀ A(θ) v_s), value
    # L + (σ²/2)(1/S)Σ_s v_sᵀ A v_s, with A the dense Hessian or NME
    reg = regularizers.get(name, sigma=sigma, num_probes=num_probes, probe=probe)
    value, grads = run(reg, objective, params, batch, key)
    loss, g = dense_value_grad(objective, params, batch)
    matrix_fn = TRACE_MATRICES[name]
    matrix = matrix_fn(objective, params, batch)
    quads, quad_grads = [], []
    for k in probe_keys(key, num_probes):  # the probes of nmelab.estimators, key by key
        v = flat(sample_probe(k, params, probe))
        quads.append(v @ matrix @ v)
        quad_grads.append(quadratic_form_gradient(matrix_fn, objective, params, batch, v))
    want = g + 0.5 * sigma**2 * np.mean(quad_grads, axis=0)
    np.testing.assert_allclose(flat(grads), want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(value, loss + 0.5 * sigma**2 * np.mean(quads), rtol=1e-11)


@pytest.mark.parametrize("activation", activation_cases(default=("tanh", "nmelab-augmented_relu")))
@pytest.mark.parametrize("name", list(TRACE_MATRICES))
def test_trace_penalty_is_the_exact_gradient_for_the_drawn_probes(activation, name):
    _check_trace_penalty(name, *problem_for(activation), jax.random.key(3), 2, "rademacher")


@pytest.mark.parametrize("name", list(TRACE_MATRICES))
def test_trace_penalty_with_many_probes(name):
    # more than 8 probes run in lax.map instead of an unrolled loop
    _check_trace_penalty(name, *problem_for("tanh"), jax.random.key(6), 9, "gaussian")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TRACE_MATRICES))
def test_trace_penalties_on_a_cnn(name):
    objective, params, batch = toy_problems.cnn_problem("tanh", num=2)
    _check_trace_penalty(name, objective, params, batch, jax.random.key(1), 1, "gaussian")


def test_nme_quadratic_form_equals_the_nme_product():
    # value − L = (σ²/2)·vᵀ NME v with NME v from nmelab.curvature.nme_vector_product
    objective, params, batch = problem_for("tanh")
    key, sigma = jax.random.key(5), 1.5
    reg = regularizers.get("nme_trace", sigma=sigma, probe="gaussian")
    value, _ = run(reg, objective, params, batch, key)
    v = sample_probe(probe_keys(key, 1)[0], params, "gaussian")
    quad = jnp.vdot(flat(v), flat(nme_vector_product(objective, params, batch, v)))
    np.testing.assert_allclose(value - objective.value(params, batch), 0.5 * sigma**2 * quad)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_penalty_probes_are_those_of_the_trace_estimator(probe):
    # same key, same probes: the penalty's (2/σ²)(value − L) is the mean of nmelab.trace's samples
    objective, params, batch = problem_for("tanh")
    key, sigma = jax.random.key(8), 0.5
    for name, op_fn in (("hessian_trace", nmelab.hessian), ("nme_trace", nmelab.nme)):
        reg = regularizers.get(name, sigma=sigma, num_probes=3, probe=probe)
        value, _ = run(reg, objective, params, batch, key)
        estimate = nmelab.trace(op_fn(objective, params, batch), key, 3, probe=probe)
        penalty = (value - objective.value(params, batch)) / (0.5 * sigma**2)
        np.testing.assert_allclose(penalty, estimate.value, rtol=1e-10)


def test_differentiating_the_frozen_residual_nme_product_would_be_wrong():
    # The trap nme_trace avoids: nme_vector_product stops the gradient of ∂L/∂z, so its θ-gradient
    # drops a term and misses the dense ∇_θ(vᵀ NME v) by a lot.
    objective, params, batch = problem_for("tanh")
    v_tree = sample_probe(jax.random.key(2), params, "gaussian")
    v = flat(v_tree)

    def frozen(p):
        return jnp.vdot(v, flat(nme_vector_product(objective, p, batch, v_tree)))

    naive = flat(jax.grad(frozen)(params))
    exact = quadratic_form_gradient(dense.dense_nme, objective, params, batch, v)
    assert np.linalg.norm(naive - exact) > 0.05 * np.linalg.norm(exact)
