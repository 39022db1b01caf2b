"""Bad input gets a clear error naming the argument."""

import jax
import jax.numpy as jnp
import numpy as np
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
    with pytest.raises(
        ValueError,
        match=r"params\[1\]\['b'\] contains NaN or inf, must be finite: found 1 NaN and 0 inf .*shape \(4,\)",
    ):
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


KEY = jax.random.PRNGKey(0)

# Every public curvature entry point, as ``fn(objective, params, batch)``; the estimators enter
# through the same check (trace_split builds nothing before it).
ENTRY_POINTS = {
    "hessian": nmelab.hessian,
    "gauss_newton": nmelab.gauss_newton,
    "nme": nmelab.nme,
    "fisher": lambda o, p, b: nmelab.fisher(o, p, b, KEY, 2),
    "split_product": lambda o, p, b: nmelab.split_product(o, p, b, jax.tree.map(jnp.ones_like, p)),
    "linearize_split": nmelab.linearize_split,
    "ntk": lambda o, p, b: nmelab.ntk(o, p, b[0]),
    "trace_split": lambda o, p, b: nmelab.trace_split(o, p, b, KEY, 2),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_empty_batch_is_refused(problem, entry):
    objective, params, (x, y) = problem
    name = "x" if entry == "ntk" else "batch x"
    with pytest.raises(
        ValueError, match=rf"^{name} is empty \(leading size 0, shapes \[\(0, 4\)\]\)"
    ):
        ENTRY_POINTS[entry](objective, params, (x[:0], y[:0]))


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
def test_non_finite_inputs_are_refused(problem, entry, bad):
    objective, params, (x, y) = problem
    name = "x" if entry == "ntk" else "batch x"
    counts = "1 NaN and 0 inf" if jnp.isnan(bad) else "0 NaN and 1 inf"
    with pytest.raises(
        ValueError,
        match=rf"^{name} contains NaN or inf, must be finite: found {counts} among its 24 values "
        r"\(shape \(6, 4\), first at index \(2, 1\)\)",
    ):
        ENTRY_POINTS[entry](objective, params, (x.at[2, 1].set(bad), y))


def test_non_finite_numpy_inputs_and_pytree_leaves_are_named(problem):
    objective, params, (x, y) = problem
    x_np = np.array(x)
    x_np[0, 0] = np.nan
    with pytest.raises(
        ValueError, match=r"^batch x contains NaN or inf, must be finite: found 1 NaN"
    ):
        nmelab.hessian(objective, params, (x_np, y))
    pair_objective = nmelab.Objective(
        lambda p, xs: objective.apply_fn(p, xs["a"] + xs["b"]), "cross_entropy"
    )
    inputs = {"a": x, "b": x.at[3, 0].set(jnp.inf)}
    with pytest.raises(
        ValueError,
        match=r"^batch x\['b'\] contains NaN or inf, must be finite: found 0 NaN and 1 inf",
    ):
        nmelab.gauss_newton(pair_objective, params, (inputs, y))


def test_non_finite_float_targets_are_refused():
    objective, params, (x, _) = tp.mlp_problem("tanh", "mse")
    y = jnp.zeros((6, 3)).at[0, 2].set(jnp.nan)
    with pytest.raises(
        ValueError, match=r"^batch y contains NaN or inf, must be finite: found 1 NaN"
    ):
        nmelab.nme(objective, params, (x, y))


def test_under_jit_only_the_value_checks_are_skipped(problem):
    """Documented behaviour: tracers carry no values, so NaN inputs give NaN, not an error."""
    objective, params, (x, y) = problem
    v = jax.tree.map(jnp.ones_like, params)

    @jax.jit
    def product(inputs):
        return nmelab.hessian(objective, params, (inputs, y)) @ v

    assert not np.isfinite(np.asarray(product(x.at[0, 0].set(jnp.nan))[0]["w"])).all()
    with pytest.raises(ValueError, match="batch x is empty"):  # a shape check: still runs
        jax.jit(lambda inputs: nmelab.hessian(objective, params, (inputs, y[:0])) @ v)(x[:0])


def test_split_product_names_the_mismatched_leaf_like_mv(problem):
    objective, params, batch = problem
    bad = jax.tree.map(jnp.ones_like, params)
    bad[0]["w"] = jnp.zeros((3, 3))
    message = r"v\[0\]\['w'\] must have shape \(4, 5\) like params\[0\]\['w'\], got \(3, 3\)"
    with pytest.raises(ValueError, match=message):
        nmelab.split_product(objective, params, batch, bad)
    with pytest.raises(ValueError, match=message):
        nmelab.hessian(objective, params, batch) @ bad
    with pytest.raises(ValueError, match="v must have the tree structure of params"):
        nmelab.split_product(objective, params, batch, params[:-1])
