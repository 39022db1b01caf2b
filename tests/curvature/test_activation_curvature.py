"""What the activations' chosen second derivatives do to the Hessian split of an MLP (§4.3-4.4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nmelab
import toy_problems as tp
from nmelab import activations


def _matrices(activation, params, batch):
    objective = nmelab.Objective(tp.mlp_apply_fn(activation), "cross_entropy")
    return {
        name: np.asarray(make(objective, params, batch).as_matrix())
        for name, make in (("h", nmelab.hessian), ("gn", nmelab.gauss_newton), ("nme", nmelab.nme))
    }


def activation_curvature_term(params, batch, activation, second_derivative):
    """``Σ_l J_hlᵀ diag(δ_l ⊙ φ''(h_l)) J_hl``: the φ''-part of the NME, computed independently.

    ``h_l`` are the hidden pre-activations, ``J_hl = ∂h_l/∂θ`` and ``δ_l = ∂L/∂φ(h_l)``.
    """
    x, y = batch
    flat, unravel = ravel_pytree(params)

    def forward(p, shifts):
        h, pre = x, []
        for layer, shift in zip(p[:-1], shifts, strict=True):
            pre.append(h @ layer["w"] + layer["b"])
            h = activation(pre[-1]) + shift
        return h @ p[-1]["w"] + p[-1]["b"], pre

    zero_shifts = [jnp.zeros((x.shape[0], layer["b"].size)) for layer in params[:-1]]
    loss = lambda shifts: nmelab.losses.cross_entropy(forward(params, shifts)[0], y)  # noqa: E731
    deltas = jax.grad(loss)(zero_shifts)
    pre = forward(params, zero_shifts)[1]
    total = 0.0
    for index, (delta, h) in enumerate(zip(deltas, pre, strict=True)):
        jac = jax.jacfwd(lambda f, i=index: forward(unravel(f), zero_shifts)[1][i].reshape(-1))(
            flat
        )
        weights = (delta * second_derivative(h)).reshape(-1)
        total = total + jac.T @ (weights[:, None] * jac)
    return np.asarray(total)


SIZES = (4, 6, 5, 3)


@pytest.mark.parametrize("beta", [1.0, pytest.param(5.0, marks=pytest.mark.slow)])
def test_augmented_relu_changes_only_the_nme(beta):
    _, params, batch = tp.mlp_problem("relu", sizes=SIZES)
    relu = _matrices(activations.relu, params, batch)
    aug_fn = lambda x: activations.augmented_relu(x, beta)  # noqa: E731
    aug = _matrices(aug_fn, params, batch)
    np.testing.assert_array_equal(aug["gn"], relu["gn"])
    np.testing.assert_allclose(aug["h"] - relu["h"], aug["nme"] - relu["nme"], atol=1e-13)
    assert np.abs(aug["nme"] - relu["nme"]).max() > 1e-3
    gauss = lambda h: beta / jnp.sqrt(2 * jnp.pi) * jnp.exp(-((beta * h) ** 2) / 2)  # noqa: E731
    expected = activation_curvature_term(params, batch, activations.relu, gauss)
    np.testing.assert_allclose(aug["h"] - relu["h"], expected, atol=1e-12)


def test_gelu_minus_diminished_gelu_is_the_activation_curvature_part():
    _, params, batch = tp.mlp_problem("gelu", sizes=SIZES)
    gelu = _matrices(activations.gelu, params, batch)
    dim = _matrices(activations.diminished_gelu, params, batch)
    np.testing.assert_array_equal(gelu["gn"], dim["gn"])

    def gelu_second(h):
        return jnp.exp(-(h**2) / 2) / jnp.sqrt(2 * jnp.pi) * (2 - h**2)

    expected = activation_curvature_term(params, batch, activations.gelu, gelu_second)
    np.testing.assert_allclose(gelu["h"] - dim["h"], expected, atol=1e-12)
    np.testing.assert_allclose(gelu["nme"] - dim["nme"], expected, atol=1e-12)
    assert np.abs(expected).max() > 1e-3


def test_diminished_gelu_has_a_zero_nme_diagonal():
    _, params, batch = tp.mlp_problem("gelu", sizes=SIZES)
    dim = _matrices(activations.diminished_gelu, params, batch)
    np.testing.assert_array_equal(np.diag(dim["nme"]), 0.0)
    assert np.abs(dim["nme"]).max() > 1e-3  # cross-layer blocks remain
    gelu = _matrices(activations.gelu, params, batch)
    assert np.abs(np.diag(gelu["nme"])).max() > 1e-4
