"""Bad hyperparameters and unsupported inputs get errors that name the argument."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from regularizer_helpers import problem_for

import nmelab
from nmelab import regularizers


def test_unknown_name_lists_the_valid_choices():
    with pytest.raises(ValueError, match="unknown regularizer name 'sma'.*sam.*gn_trace"):
        regularizers.get("sma", rho=0.1)
    with pytest.raises(TypeError, match="name must be a string"):
        regularizers.get(None)


@pytest.mark.parametrize(
    ("name", "hparams", "match"),
    [
        (
            "sam",
            {"rho": 0.1, "sigma": 0.1},
            "'sam' accepts only rho, weight_decay, weight_decay_mask; got unknown.*sigma=0.1",
        ),
        ("none", {"rho": 0.1}, "'none' takes no hyperparameters"),
        ("gradient_penalty", {"rho": 0.1, "q": 2}, "accepts only rho, p; .*q=2"),
        ("weight_noise", {"rho": 0.1}, "accepts only sigma"),
        ("sam", {}, "'sam' requires hyperparameter\\(s\\) rho"),
        ("hessian_trace", {"num_probes": 2}, "requires hyperparameter\\(s\\) sigma"),
    ],
)
def test_unknown_or_missing_hyperparameters(name, hparams, match):
    with pytest.raises(ValueError, match=match):
        regularizers.get(name, **hparams)


@pytest.mark.parametrize(
    ("name", "hparams", "match"),
    [
        ("gradient_penalty", {"rho": -0.1}, "rho .*must be >= 0, got -0.1"),
        ("sam", {"rho": -1.0}, "rho .*must be >= 0"),
        ("usam", {"rho": math.nan}, "rho .*must be finite, got nan"),
        ("sam", {"rho": math.inf}, "rho .*must be finite"),
        ("gradient_penalty", {"rho": 0.1, "p": 3}, "p must be 1 or 2.*got 3"),
        ("gradient_penalty", {"rho": 0.1, "p": 0}, "p must be 1 or 2"),
        ("gradient_penalty", {"rho": 0.1, "p": 1.5}, "p must be 1 or 2"),
        ("gradient_penalty", {"rho": 0.1, "p": True}, "p must be 1 or 2"),
        ("weight_noise", {"sigma": -0.5}, "sigma .*must be >= 0, got -0.5"),
        ("hessian_trace", {"sigma": -1.0}, "sigma .*must be >= 0"),
        ("gn_trace", {"sigma": math.inf}, "sigma .*must be finite"),
        ("nme_trace", {"sigma": 0.1, "num_probes": 0}, "num_probes must be an integer >= 1, got 0"),
        ("hessian_trace", {"sigma": 0.1, "num_probes": 1.0}, "num_probes must be an integer"),
        ("hessian_trace", {"sigma": 0.1, "probe": "normal"}, "probe must be one of"),
        ("gn_trace", {"sigma": 0.1, "form": "batch"}, "form must be one of 'minibatch'"),
        ("gn_trace", {"sigma": 0.1, "straight_through": 1}, "straight_through must be one of"),
        ("sam", {"rho": jnp.array([0.1, -0.2])}, "rho .*must be >= 0"),
    ],
)
def test_bad_values_name_the_argument(name, hparams, match):
    with pytest.raises(ValueError, match=match):
        regularizers.get(name, **hparams)


@pytest.mark.parametrize("bad", ["0.1", None, True, 1j])
def test_non_real_strength_is_a_type_error(bad):
    with pytest.raises(TypeError, match="rho must be a real number"):
        regularizers.get("sam", rho=bad)


def test_direct_construction_validates_too():
    with pytest.raises(ValueError, match="rho .*must be >= 0"):
        regularizers.SAM(rho=-1.0)
    with pytest.raises(ValueError, match="num_probes"):
        regularizers.HessianTrace(sigma=0.1, num_probes=0)
    with pytest.raises(ValueError, match="must be finite"):
        regularizers.WeightNoise(sigma=np.array([1.0, np.nan]))


def test_integer_strength_is_made_float_by_get():
    reg = regularizers.get("sam", rho=1)
    assert isinstance(reg.rho, float) and reg.rho == 1.0


def test_pytree_placeholders_do_not_trip_validation():
    reg = regularizers.get("gn_trace", sigma=0.2, form="per_example")
    leaves, treedef = jax.tree.flatten(reg)
    rebuilt = jax.tree.unflatten(treedef, [object()])  # tree utilities pass placeholders
    assert rebuilt.form == "per_example"
    assert jax.tree.map(lambda _: None, reg).sigma is None


def test_gn_trace_needs_cross_entropy():
    objective, params, batch = problem_for("tanh")
    mse = nmelab.Objective(objective.apply_fn, loss="mse")
    reg = regularizers.get("gn_trace", sigma=0.1)
    with pytest.raises(ValueError, match="needs loss='cross_entropy', got loss='mse'"):
        reg.value_and_grad(mse, params, batch, jax.random.key(0))


@pytest.mark.parametrize("name", ["weight_noise", "hessian_trace", "gn_trace", "nme_trace"])
def test_stochastic_regularizers_need_a_key(name):
    objective, params, batch = problem_for("tanh")
    with pytest.raises(ValueError, match=f"{name}' is stochastic and needs a jax.random key"):
        regularizers.get(name, sigma=0.1).value_and_grad(objective, params, batch)


def test_bad_objective_and_batch_are_reported():
    objective, params, batch = problem_for("tanh")
    reg = regularizers.get("sam", rho=0.1)
    with pytest.raises(TypeError, match="objective must be an nmelab.Objective"):
        reg.value_and_grad(objective.apply_fn, params, batch)
    with pytest.raises(ValueError, match="batch must be a pair"):
        reg.value_and_grad(objective, params, batch[0])
    bad = jax.tree.map(lambda leaf: leaf.at[(0,) * leaf.ndim].set(jnp.nan), params)
    with pytest.raises(ValueError, match="contains NaN"):
        reg.value_and_grad(objective, bad, batch)
