"""Cached tiny problems and their dense float64 twins for the estimator tests.

``toy_problems`` builds a fresh ``Objective`` (a new closure) on every call, which defeats the jit
cache; caching the problem per name lets the estimator tests share compiled code.
"""

import functools

import jax
import jax.numpy as jnp

import nmelab
import toy_problems as tp
from nmelab.curvature import dense

OPERATORS = {"hessian": nmelab.hessian, "gauss_newton": nmelab.gauss_newton, "nme": nmelab.nme}
DENSE = {
    "hessian": dense.dense_hessian,
    "gauss_newton": dense.dense_gauss_newton,
    "nme": dense.dense_nme,
}


@functools.cache
def problem(kind="mlp", activation="tanh", loss="cross_entropy", **kwargs):
    """``(objective, params, batch)``, cached per arguments."""
    maker = tp.mlp_problem if kind == "mlp" else tp.cnn_problem
    return maker(activation, loss, **kwargs)


@functools.cache
def operator(name, kind="mlp", activation="tanh", loss="cross_entropy"):
    """The matrix-free operator ``name`` of the cached problem."""
    return OPERATORS[name](*problem(kind, activation, loss))


@functools.cache
def dense_matrix(name, kind="mlp", activation="tanh", loss="cross_entropy"):
    """The dense twin (jax.hessian / explicit J and H_z) of operator ``name``, as float64."""
    objective, params, batch = problem(kind, activation, loss)
    fn = jax.jit(DENSE[name], static_argnums=0)
    return jnp.asarray(fn(objective, params, batch))
