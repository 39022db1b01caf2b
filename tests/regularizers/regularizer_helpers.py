"""Shared helpers for the regularizer tests: problems, jitted dense twins, variance-based checks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nmelab
import toy_problems
from nmelab import regularizers
from nmelab.curvature import dense

try:
    from nmelab import activations as nme_activations
except ImportError:  # written in parallel; the toy activations still run
    nme_activations = None

Z_MAX = 5.0  # per-coordinate z-score bound; with < 100 coordinates a false alarm is < 1e-4

# the regularizer's strength hyperparameter, by name
STRENGTH = {
    "none": None,
    "gradient_penalty": "rho",
    "sam": "rho",
    "usam": "rho",
    "weight_noise": "sigma",
    "hessian_trace": "sigma",
    "gn_trace": "sigma",
    "nme_trace": "sigma",
}


def activation_cases(default=("tanh",)):
    """Toy tanh/gelu/relu and every nmelab activation; those not in ``default`` are marked slow."""
    cases = [("tanh", "tanh"), ("gelu", "gelu"), ("relu", "relu")]
    if nme_activations is not None:
        for name in nme_activations.NAMES:
            hp = {"beta": 2.0} if name in ("beta_gelu", "augmented_relu") else {}
            cases.append((f"nmelab-{name}", (name, tuple(hp.items()))))
    return [
        pytest.param(case, id=case_id, marks=() if case_id in default else pytest.mark.slow)
        for case_id, case in cases
    ]


@functools.cache
def problem_for(activation):
    """(objective, params, batch): a 3-4-3 MLP on 4 examples with a toy or nmelab activation."""
    if isinstance(activation, str):
        return toy_problems.mlp_problem(activation, sizes=(3, 4, 3), num=4, seed=1)
    name, hp = activation
    _, params, batch = toy_problems.mlp_problem("tanh", sizes=(3, 4, 3), num=4, seed=1)
    act = nme_activations.get(name, **dict(hp))
    return nmelab.Objective(toy_problems.mlp_apply_fn(act)), params, batch


def all_regularizers(strength=0.3):
    """One instance of every registered regularizer, plus the other static variants."""
    assert set(STRENGTH) == set(regularizers.NAMES)
    out = []
    for name in regularizers.NAMES:
        field = STRENGTH[name]
        out.append(regularizers.get(name, **({field: strength} if field else {})))
    out.append(regularizers.get("gradient_penalty", rho=strength, p=2))
    out.append(regularizers.get("gn_trace", sigma=strength, form="per_example"))
    out.append(regularizers.get("gn_trace", sigma=strength, straight_through=True))
    return out


def run(reg, objective, params, batch, key=None):
    """Jitted ``reg.value_and_grad`` with the regularizer as a pytree argument."""
    return _run(objective, reg, params, batch, key)


@functools.partial(jax.jit, static_argnums=0)
def _run(objective, reg, params, batch, key):
    return reg.value_and_grad(objective, params, batch, key)


def flat(tree):
    return ravel_pytree(tree)[0]


@functools.partial(jax.jit, static_argnums=0)
def dense_value_grad(objective, params, batch):
    """``(L, ∇L)`` on the raveled params by plain reverse mode."""
    vec, unravel = ravel_pytree(params)
    return jax.value_and_grad(lambda f: objective.value(unravel(f), batch))(vec)


dense_hessian = jax.jit(dense.dense_hessian, static_argnums=0)
dense_nme = jax.jit(dense.dense_nme, static_argnums=0)
dense_gauss_newton = jax.jit(dense.dense_gauss_newton, static_argnums=0)


def max_z(samples, expected):
    """The largest per-coordinate |mean − expected| / stderr over coordinates with variance."""
    samples = np.asarray(samples)
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    keep = stderr > 0
    return np.max(np.abs(samples.mean(axis=0) - np.asarray(expected))[keep] / stderr[keep])


def assert_mean_matches(samples, expected, z_max=Z_MAX):
    """|mean − expected| < z_max · stderr per coordinate (zero-variance coordinates: exactly)."""
    samples = np.asarray(samples)
    mean = samples.mean(axis=0)
    stderr = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    diff = np.abs(mean - np.asarray(expected))
    exact = stderr < 1e-12 * (1 + np.abs(mean))
    assert np.all(diff[exact] < 1e-9 * (1 + np.abs(mean[exact])))
    if np.any(~exact):
        z = diff[~exact] / stderr[~exact]
        assert z.max() < z_max, f"max z-score {z.max():.2f} (coordinate {np.argmax(z)})"


def many_keys(reg, objective, params, batch, num_keys, seed=0):
    """``(values, flat directions)`` for ``num_keys`` independent keys, in one jit."""
    keys = jax.random.split(jax.random.key(seed), num_keys)

    @jax.jit
    def sweep(keys):
        def one(key):
            value, grads = reg.value_and_grad(objective, params, batch, key)
            return value, flat(grads)

        return jax.lax.map(one, keys, batch_size=1000)

    return sweep(keys)


def quadratic_form_gradient(matrix_fn, objective, params, batch, v):
    """``∇_θ (vᵀ A(θ) v)`` for a dense ``A`` and a fixed ``v`` (reverse over the dense matrix)."""
    return _quadratic_form_gradient(matrix_fn, objective, params, batch, v)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _quadratic_form_gradient(matrix_fn, objective, params, batch, v):
    vec, unravel = ravel_pytree(params)
    return jax.grad(lambda f: v @ matrix_fn(objective, unravel(f), batch) @ v)(vec)


@functools.partial(jax.jit, static_argnums=(0, 1))
def trace_value_and_gradient(matrix_fn, objective, params, batch):
    """``(tr A, ∇_θ tr A(θ))`` for a dense ``A``."""
    vec, unravel = ravel_pytree(params)
    return jax.value_and_grad(lambda f: jnp.trace(matrix_fn(objective, unravel(f), batch)))(vec)
