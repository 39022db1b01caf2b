"""Fig. 1 on a tiny grid: what is exactly true of the NME over two weights of one layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nmelab import activations
from nmelab.experiments import fig1_landscape as f1

AXIS = np.linspace(-2.0, 2.0, 9)
X, Y = [1.0, -0.6], 0.5


@pytest.fixture(scope="module")
def params():
    return f1._init_params(3)


@pytest.fixture(scope="module")
def gelu4(params):
    act = activations.get("beta_gelu", beta=4.0)
    return act, f1.landscape(act, params, X, Y, AXIS, AXIS)


def _forward(act, p, a, b):
    w1 = p["W1"].copy()
    w1[0, 0], w1[0, 1] = a, b
    h1 = np.asarray(X) @ w1 + p["b1"]
    h2 = np.asarray(act(jnp.asarray(h1))) @ p["W2"] + p["b2"]
    return float((np.asarray(act(jnp.asarray(h2))) @ p["W3"] + p["b3"])[0])


def test_relu_within_layer_nme_is_exactly_zero_but_full_nme_is_not(params):
    out = f1.landscape(activations.get("relu"), params, X, Y, AXIS, AXIS)
    assert out["nme_block"].shape == (9, 9)
    assert np.all(out["nme_block"] == 0.0)  # ReLU is linear in one layer's weights
    assert out["nme_full"].max() > 1e-3  # cross-layer blocks carry first derivatives only


def test_loss_matches_a_direct_forward_pass(params, gelu4):
    act, out = gelu4
    for i, j in [(0, 0), (3, 5), (8, 2)]:
        z = _forward(act, params, AXIS[j], AXIS[i])  # rows are b, columns a
        assert out["loss"][i, j] == pytest.approx(0.5 * (z - Y) ** 2, rel=1e-10, abs=1e-14)


def test_nme_block_is_hessian_minus_gauss_newton_of_the_two_weights(params, gelu4):
    """Independent twin: H_ab − J_abᵀ J_ab (MSE, one output, H_z = 1), by jax.hessian."""
    act, out = gelu4
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v) for k, v in params.items()}

        def z(ab):
            w1 = p["W1"].at[0, 0].set(ab[0]).at[0, 1].set(ab[1])
            h1 = jnp.asarray(X) @ w1 + p["b1"]
            return (act(act(h1) @ p["W2"] + p["b2"]) @ p["W3"] + p["b3"])[0]

        for i, j in [(4, 4), (1, 7)]:
            ab = jnp.asarray([AXIS[j], AXIS[i]])
            hess = jax.hessian(lambda v: 0.5 * (z(v) - Y) ** 2)(ab)
            jac = jax.grad(z)(ab)
            nme = hess - jnp.outer(jac, jac)
            assert out["nme_block"][i, j] == pytest.approx(float(jnp.linalg.norm(nme)), rel=1e-9)


def test_beta_gelu_nme_concentrates_near_boundaries_as_beta_grows(params):
    axis = np.linspace(-3.0, 3.0, 41)
    shares = []
    for beta in (1.0, 8.0):
        out = f1.landscape(activations.get("beta_gelu", beta=beta), params, X, Y, axis, axis)
        assert out["nme_block"].max() > 0
        mass, area = f1.boundary_concentration(out["nme_block"], out["preacts"], 0.25)
        shares.append(mass - area)
    assert shares[1] > 0.2 and shares[1] > shares[0]


def test_run_writes_arrays_and_summary(tmp_path):
    config = {**f1.default_config("quick"), "resolution": 7}
    summary = f1.run(config, str(tmp_path))
    arrays = f1.load(tmp_path)
    keys = [a["key"] for a in summary["activations"]]
    assert keys == ["relu", "beta_gelu_beta1", "beta_gelu_beta4"]
    assert summary["activations"][0]["nme_block_max"] == 0.0
    assert arrays["relu__loss"].shape == (7, 7)
    assert arrays["beta_gelu_beta4__preacts"].shape == (7, 7, 6)
