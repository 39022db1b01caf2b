"""Bad input gets a clear error naming the argument."""

import jax
import jax.numpy as jnp
import pytest

import nmelab
import toy_problems as tp


@pytest.fixture
def problem():
    return tp.mlp_problem("tanh", "cross_entropy")


def test_vector_with_wrong_structure_or_shape(problem):
    objective, params, batch = problem
    op = nmelab.hessian(objective, params, batch)
    with pytest.raises(ValueError, match="tree structure"):
        op.mv(params[:-1])
    bad = jax.tree.map(lambda a: a, params)
    bad[0]["w"] = jnp.zeros((3, 3))
    with pytest.raises(ValueError, match=r"v\[0\]\['w'\] must have shape \(4, 5\)"):
        op.mv(bad)


def test_integer_params(problem):
    objective, params, batch = problem
    params[0]["w"] = params[0]["w"].astype(jnp.int32)
    with pytest.raises(TypeError, match=r"params\[0\]\['w'\] must be a floating-point array"):
        nmelab.gauss_newton(objective, params, batch)


def test_labels_out_of_range_or_wrong_length(problem):
    objective, params, (x, y) = problem
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 3\)"):
        nmelab.hessian(objective, params, (x, y.at[0].set(3)))
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 3\)"):
        nmelab.nme(objective, params, (x, y.at[0].set(-1)))
    with pytest.raises(ValueError, match="same size"):
        nmelab.nme(objective, params, (x, y[:-1]))
    with pytest.raises(ValueError, match=r"float targets y must have the outputs' shape \(6, 3\)"):
        nmelab.nme(objective, params, (x, jnp.zeros((6, 4))))


def test_unknown_loss_name():
    with pytest.raises(
        ValueError, match="unknown loss 'hinge'; valid names are cross_entropy, mse"
    ):
        nmelab.Objective(lambda p, x: x, "hinge")
    with pytest.raises(TypeError, match="loss must be a name"):
        nmelab.Objective(lambda p, x: x, 3)


def test_batch_sizes_differ(problem):
    objective, params, (x, y) = problem
    with pytest.raises(
        ValueError, match="batch x and y must have the same size, got 5 inputs and 6"
    ):
        nmelab.hessian(objective, params, (x[:5], y))
    with pytest.raises(ValueError, match="batch must be a pair"):
        nmelab.hessian(objective, params, x)


def test_nan_params_name_the_leaf(problem):
    objective, params, batch = problem
    params[1]["b"] = params[1]["b"].at[0].set(jnp.nan)
    with pytest.raises(ValueError, match=r"params\[1\]\['b'\] contains NaN or inf"):
        nmelab.hessian(objective, params, batch)


def test_fisher_rejects_custom_losses_and_bad_sample_counts(problem):
    objective, params, batch = problem
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1, got 0"):
        nmelab.fisher(objective, params, batch, jax.random.PRNGKey(0), 0)
    custom = nmelab.Objective(objective.apply_fn, lambda z, y: jnp.sum(z**2))
    with pytest.raises(ValueError, match="sampled-label Fisher needs loss"):
        nmelab.fisher(custom, params, batch, jax.random.PRNGKey(0), 4)
    with pytest.raises(TypeError, match="objective must be an nmelab.Objective"):
        nmelab.hessian(objective.apply_fn, params, batch)
