"""Tests for nmelab.activations: AD derivatives against closed forms (float64), eq. 13-16."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmelab import activations as act

BETAS = (0.5, 5.0, 20.0)  # beta = 1 is covered by the GELU comparisons
TOL = {"rtol": 1e-12, "atol": 1e-12}

# float64 grid containing 0, ±1e-8 and the regions where β = 20 curvature lives
GRID = np.unique(
    np.concatenate(
        [
            np.linspace(-6.0, 6.0, 241),
            np.linspace(-0.2, 0.2, 81),
            [0.0, 1e-8, -1e-8, 1e-300, -1e-300, 30.0, -30.0],
        ]
    )
)


# ------------------------------------------------------------------------------------------
# independent reference formulas (math.erf, numpy; no nmelab, no JAX autodiff)
# ------------------------------------------------------------------------------------------

_erf = np.vectorize(math.erf)


def Phi(z):
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


def phi(z):
    return np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)


def theta(x):
    return (x > 0).astype(float)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def beta_gelu_ref(beta):
    return (
        lambda x: x * Phi(beta * x),
        lambda x: Phi(beta * x) + beta * x * phi(beta * x),
        lambda x: (
            beta / math.sqrt(2 * math.pi) * np.exp(-(beta**2) * x**2 / 2) * (2 - beta**2 * x**2)
        ),
        lambda x: beta**2 * phi(beta * x) * ((beta * x) ** 3 - 4 * beta * x),
    )


def reference(name, beta):
    """(f, f', f'', f''') as AD should return them."""
    zero = np.zeros_like
    if name == "relu":
        return (lambda x: np.maximum(x, 0.0), theta, zero, zero)
    if name == "gelu":
        return beta_gelu_ref(1.0)
    if name == "beta_gelu":
        return beta_gelu_ref(beta)
    if name == "augmented_relu":
        return (
            lambda x: np.maximum(x, 0.0),
            theta,
            lambda x: beta / math.sqrt(2 * math.pi) * np.exp(-(beta**2) * x**2 / 2),
            lambda x: -(beta**3) * x * phi(beta * x),
        )
    if name == "diminished_gelu":
        f, df, _, _ = beta_gelu_ref(1.0)
        return (f, df, zero, zero)
    if name == "tanh":
        t = np.tanh
        return (
            t,
            lambda x: 1 - t(x) ** 2,
            lambda x: -2 * t(x) * (1 - t(x) ** 2),
            lambda x: (1 - t(x) ** 2) * (6 * t(x) ** 2 - 2),
        )
    if name == "softplus":
        s = sigmoid
        return (
            lambda x: np.logaddexp(x, 0.0),
            s,
            lambda x: s(x) * (1 - s(x)),
            lambda x: s(x) * (1 - s(x)) * (1 - 2 * s(x)),
        )
    raise AssertionError(name)


def needs_beta(name):
    return name in ("beta_gelu", "augmented_relu")


def cases():
    return [
        pytest.param(name, beta, id=name if beta is None else f"{name}-{beta}")
        for name in act.NAMES
        for beta in (BETAS if needs_beta(name) else (None,))
    ]


def build(name, beta):
    return act.get(name, beta=beta) if needs_beta(name) else act.get(name)


def ad_derivatives(f):
    """f, f', f'', f''' by JAX autodiff, elementwise via vmap."""
    d1 = jax.grad(f)
    d2 = jax.grad(d1)
    d3 = jax.grad(d2)
    return [jax.jit(jax.vmap(g)) for g in (f, d1, d2, d3)]  # jitted: eager is ~4x slower


# ------------------------------------------------------------------------------------------
# derivatives against closed forms
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "beta"), cases())
def test_ad_derivatives_match_closed_forms(name, beta):
    x = jnp.asarray(GRID)
    got = ad_derivatives(build(name, beta))
    for order, (g, ref) in enumerate(zip(got, reference(name, beta), strict=True)):
        np.testing.assert_allclose(
            np.asarray(g(x)), ref(GRID), **TOL, err_msg=f"{name} beta={beta} order {order}"
        )


def test_names_and_public_functions_agree():
    assert act.names() == act.NAMES
    assert set(act.NAMES) >= {
        "relu",
        "gelu",
        "beta_gelu",
        "augmented_relu",
        "diminished_gelu",
        "tanh",
        "softplus",
    }
    x = jnp.asarray(GRID)
    for name in act.NAMES:
        fn = getattr(act, name)
        direct = fn(x, 3.0) if needs_beta(name) else fn(x)
        np.testing.assert_array_equal(direct, build(name, 3.0)(x))


def test_heaviside_convention_at_zero():
    """Θ(0) = 0 for ReLU and augmented ReLU, matching jax.nn.relu (jnp.maximum gives 1/2)."""
    for f in (act.relu, act.get("augmented_relu", beta=2.0)):
        assert float(jax.grad(f)(0.0)) == 0.0
        assert float(jax.grad(f)(1e-300)) == 1.0
    assert float(jax.grad(jax.nn.relu)(0.0)) == 0.0


def test_gelu_is_exact_not_tanh_approximation():
    x = jnp.asarray(GRID)
    np.testing.assert_allclose(act.gelu(x), x * jax.scipy.stats.norm.cdf(x), **TOL)
    np.testing.assert_allclose(act.gelu(x), jax.nn.gelu(x, approximate=False), **TOL)
    assert float(jnp.max(jnp.abs(act.gelu(x) - jax.nn.gelu(x)))) > 1e-5


def test_beta_gelu_at_beta_one_is_gelu():
    x = jnp.asarray(GRID)
    bg = act.get("beta_gelu", beta=1.0)
    np.testing.assert_allclose(
        bg(x), 0.5 * x * (1 + jax.scipy.special.erf(x / jnp.sqrt(2.0))), **TOL
    )
    for g_bg, g_gelu in zip(ad_derivatives(bg), ad_derivatives(act.gelu), strict=True):
        np.testing.assert_allclose(g_bg(x), g_gelu(x), **TOL)


@pytest.mark.parametrize("beta", [1.0, 5.0, 20.0])
def test_beta_gelu_second_derivative_at_zero(beta):
    d2 = jax.grad(jax.grad(act.get("beta_gelu", beta=beta)))
    assert float(d2(0.0)) == pytest.approx(2 * beta / math.sqrt(2 * math.pi), rel=1e-14)


@pytest.mark.parametrize("name", ["beta_gelu", "augmented_relu"])
@pytest.mark.parametrize("beta", [1.0, 5.0, 20.0])
def test_second_derivative_integrates_to_one(name, beta):
    """∫ AD f'' dx = 1: the eq. 14 prefactor is β/√(2π), not the printed β²/√(2π)."""
    x = jnp.linspace(-40.0 / beta, 40.0 / beta, 200_001)
    d2 = jax.jit(jax.vmap(jax.grad(jax.grad(act.get(name, beta=beta)))))(x)
    integral = float(jnp.trapezoid(d2, x))
    assert integral == pytest.approx(1.0, abs=1e-10)


def test_diminished_and_augmented_differ_from_true_derivatives_only_where_designed():
    x = jnp.asarray(GRID)
    dim = ad_derivatives(act.diminished_gelu)
    gel = ad_derivatives(act.gelu)
    for order in (0, 1):
        np.testing.assert_array_equal(dim[order](x), gel[order](x))
    aug = ad_derivatives(act.get("augmented_relu", beta=3.0))
    rel = ad_derivatives(act.relu)
    for order in (0, 1):
        np.testing.assert_array_equal(aug[order](x), rel[order](x))
    assert float(jnp.min(rel[2](x))) == float(jnp.max(rel[2](x))) == 0.0


# ------------------------------------------------------------------------------------------
# transformations: jit, jvp-of-grad, vmap, mixed modes, shapes, dtypes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "beta"), cases())
def test_hvp_jvp_of_grad_inside_jit(name, beta):
    f = build(name, beta)
    ref_d2 = reference(name, beta)[2]
    x = jnp.asarray(GRID)
    v = jnp.asarray(np.random.default_rng(0).normal(size=GRID.shape))

    @jax.jit
    def hvp(x, v):
        return jax.jvp(jax.grad(lambda y: jnp.sum(f(y))), (x,), (v,))[1]

    np.testing.assert_allclose(hvp(x, v), ref_d2(GRID) * np.asarray(v), **TOL)
    # forward-over-forward and reverse-over-forward give the same second derivative
    d2_fwd = jax.jit(jax.vmap(jax.jacfwd(jax.jacfwd(f))))(x)
    d2_rev_fwd = jax.jit(jax.vmap(jax.grad(lambda s: jax.jvp(f, (s,), (jnp.ones_like(s),))[1])))(x)
    np.testing.assert_allclose(d2_fwd, ref_d2(GRID), **TOL)
    np.testing.assert_allclose(d2_rev_fwd, ref_d2(GRID), **TOL)


@pytest.mark.parametrize(("name", "beta"), cases())
def test_third_order_mixed_mode(name, beta):
    """jvp of (jvp of grad): the third order a Hessian-trace penalty needs, inside jit."""
    f = build(name, beta)
    ref_d3 = reference(name, beta)[3]
    x = jnp.asarray(GRID)
    ones = jnp.ones_like(x)

    @jax.jit
    def d3(x):
        def hvp(y):
            return jax.jvp(jax.grad(lambda z: jnp.sum(f(z))), (y,), (ones,))[1]

        return jax.jvp(hvp, (x,), (ones,))[1]

    np.testing.assert_allclose(d3(x), ref_d3(GRID), **TOL)


@pytest.mark.parametrize(("name", "beta"), cases())
def test_any_shape_and_vmap(name, beta):
    f = build(name, beta)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3, 5)))
    y = f(x)
    assert y.shape == x.shape
    np.testing.assert_allclose(jax.vmap(f)(x), y, **TOL)
    np.testing.assert_allclose(jax.vmap(jax.vmap(f))(x), y, **TOL)
    d2 = jax.jit(jax.vmap(jax.vmap(jax.vmap(jax.grad(jax.grad(f))))))(x)
    np.testing.assert_allclose(d2, reference(name, beta)[2](np.asarray(x)), **TOL)
    assert f(jnp.float64(0.5)).shape == ()
    assert f(0.5).dtype == jnp.float64  # Python float -> default float (x64 on in tests)
    assert f(jnp.arange(3)).dtype == jnp.float64  # integers are promoted


@pytest.mark.parametrize(("name", "beta"), cases())
def test_float32_preserved_at_every_order(name, beta):
    f = build(name, beta)
    x = jnp.asarray(GRID, dtype=jnp.float32)
    for order, g in enumerate(ad_derivatives(f)):
        out = g(x)
        assert out.dtype == jnp.float32, (name, order)
        ref = reference(name, beta)[order](np.asarray(x, dtype=np.float64))
        scale = max(1.0, beta or 1.0) ** order  # the k-th derivative scales like beta**k
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * scale)
    hvp = jax.jit(
        lambda x: jax.jvp(jax.grad(lambda y: jnp.sum(f(y))), (x,), (jnp.ones_like(x),))[1]
    )
    assert hvp(x).dtype == jnp.float32


def test_jit_reuses_cached_activation():
    assert act.get("beta_gelu", beta=5) is act.get("beta_gelu", beta=5.0)
    f = jax.jit(lambda x: act.beta_gelu(x, 5.0))
    np.testing.assert_allclose(f(jnp.asarray(GRID)), act.beta_gelu(jnp.asarray(GRID), 5.0), **TOL)


# ------------------------------------------------------------------------------------------
# get / validation errors
# ------------------------------------------------------------------------------------------


def test_get_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="unknown activation name 'swish'") as info:
        act.get("swish")
    for name in act.NAMES:
        assert name in str(info.value)
    with pytest.raises(TypeError, match="name must be a string"):
        act.get(None)


@pytest.mark.parametrize("name", ["beta_gelu", "augmented_relu"])
@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_get_rejects_bad_beta(name, bad):
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0, got") as info:
        act.get(name, beta=bad)
    assert repr(float(bad)) in str(info.value)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        getattr(act, name)(jnp.zeros(3), bad)


@pytest.mark.parametrize("bad", ["5", True, [1.0, 2.0], None, 1 + 2j])
def test_get_rejects_non_number_beta(bad):
    with pytest.raises(TypeError, match="beta must be a real number > 0"):
        act.get("beta_gelu", beta=bad)


def test_get_parameter_names_checked():
    with pytest.raises(ValueError, match=r"'relu' takes no parameters.*beta=2.0"):
        act.get("relu", beta=2.0)
    with pytest.raises(ValueError, match=r"'beta_gelu' accepts only beta.*gamma=1"):
        act.get("beta_gelu", beta=1.0, gamma=1)
    with pytest.raises(ValueError, match=r"'augmented_relu' requires parameter 'beta'"):
        act.get("augmented_relu")


def test_traced_beta_is_a_clear_type_error():
    with pytest.raises(TypeError, match="beta must be a concrete Python number"):
        jax.jit(act.beta_gelu)(jnp.ones(2), 2.0)


def test_numpy_and_jax_scalar_beta_accepted():
    x = jnp.asarray(GRID)
    ref = act.beta_gelu(x, 2.0)
    np.testing.assert_array_equal(act.beta_gelu(x, np.float32(2.0)), ref)
    np.testing.assert_array_equal(act.beta_gelu(x, jnp.asarray(2.0)), ref)
    np.testing.assert_array_equal(act.beta_gelu(x, 2), ref)


# ------------------------------------------------------------------------------------------
# with_derivatives
# ------------------------------------------------------------------------------------------


def test_with_derivatives_round_trip():
    g = act.with_derivatives(jnp.sin, jnp.cos, lambda x: -jnp.sin(x), name="my_sin")
    assert g.__name__ == "my_sin"
    x = jnp.asarray(GRID)
    refs = (np.sin, np.cos, lambda x: -np.sin(x), lambda x: -np.cos(x), np.sin)
    d4 = jax.jit(jax.vmap(jax.grad(jax.grad(jax.grad(jax.grad(g))))))
    for got, ref in zip([*ad_derivatives(g), d4], refs, strict=True):
        np.testing.assert_allclose(got(x), ref(GRID), **TOL)


def test_with_derivatives_prescribed_not_true_derivatives_and_python_floats():
    """df and d2f may disagree with f and may return Python floats (cast to x's dtype/shape)."""
    g = act.with_derivatives(lambda x: x**3, lambda x: 0.5, lambda x: 7.0)
    for dtype in (jnp.float32, jnp.float64):
        x = jnp.asarray(GRID, dtype=dtype)
        f0, f1, f2, f3 = (h(x) for h in ad_derivatives(g))
        assert all(a.dtype == dtype for a in (f0, f1, f2, f3))
        np.testing.assert_array_equal(f1, np.full(GRID.shape, 0.5))
        np.testing.assert_array_equal(f2, np.full(GRID.shape, 7.0))
        np.testing.assert_array_equal(f3, np.zeros(GRID.shape))  # AD of the constant d2f
        hvp = jax.jit(lambda x: jax.jvp(jax.grad(lambda y: jnp.sum(g(y))), (x,), (x,))[1])
        np.testing.assert_allclose(hvp(x), 7.0 * x, rtol=1e-6)


@pytest.mark.parametrize(("name", "beta"), cases())
def test_primal_output_of_inner_jvp_uses_prescribed_derivative(name, beta):
    """Differentiating the *value* returned by an inner jvp/vjp (e.g. jvp of value_and_grad)
    must give AD f', and the value of an inner first derivative AD f''; the custom rules get
    this right only because they compute their primal output by calling the custom function."""
    f = build(name, beta)
    refs = reference(name, beta)
    x = jnp.asarray(GRID)

    def loss(y):
        return jnp.sum(f(y))

    d1 = jax.vmap(jax.grad(f))

    @jax.jit
    def probe(x):
        ones = jnp.ones_like(x)
        return (
            jax.jvp(lambda y: jax.jvp(f, (y,), (ones,))[0], (x,), (ones,))[1],
            jax.jvp(lambda y: jax.vjp(f, y)[0], (x,), (ones,))[1],
            *jax.jvp(jax.value_and_grad(loss), (x,), (ones,))[1],
            jax.jvp(lambda y: jax.jvp(d1, (y,), (ones,))[0], (x,), (ones,))[1],
        )

    d1_via_jvp_primal, d1_via_vjp_primal, value_dot, hv, d2_via_primal = probe(x)
    np.testing.assert_allclose(d1_via_jvp_primal, refs[1](GRID), **TOL)
    np.testing.assert_allclose(d1_via_vjp_primal, refs[1](GRID), **TOL)
    np.testing.assert_allclose(value_dot, np.sum(refs[1](GRID)), **TOL)
    np.testing.assert_allclose(hv, refs[2](GRID), **TOL)
    np.testing.assert_allclose(d2_via_primal, refs[2](GRID), **TOL)


def test_with_derivatives_rejects_non_callables():
    with pytest.raises(TypeError, match="d2f must be callable"):
        act.with_derivatives(jnp.sin, jnp.cos, 0.0)


def test_inline_step_trap_is_avoided():
    """The pitfall the factory exists for: an inline step in a custom rule gives f'' = 0."""

    @jax.custom_jvp
    def naive(x):
        return jnp.maximum(x, 0.0)

    naive.defjvp(lambda p, t: (naive(p[0]), (p[0] > 0) * t[0]))
    assert float(jax.grad(jax.grad(naive))(0.0)) == 0.0
    aug = act.get("augmented_relu", beta=1.0)
    assert float(jax.grad(jax.grad(aug))(0.0)) == pytest.approx(1 / math.sqrt(2 * math.pi))
