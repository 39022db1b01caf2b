"""Every curvature operator against its dense float64 twin, and the algebraic identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nmelab
import toy_problems as tp
from nmelab.curvature import dense

PROBLEMS = [
    ("mlp", "relu", "cross_entropy"),
    ("mlp", "tanh", "cross_entropy"),
    ("mlp", "gelu", "cross_entropy"),
    ("mlp", "relu", "mse"),
    ("mlp", "tanh", "mse"),
    ("mlp", "gelu", "mse"),
    ("cnn", "tanh", "cross_entropy"),
    ("cnn", "relu", "mse"),
]


def _problem(kind, activation, loss):
    maker = tp.mlp_problem if kind == "mlp" else tp.cnn_problem
    return maker(activation, loss)


def _rel_err(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("kind,activation,loss", PROBLEMS)
def test_operators_equal_dense_twins(kind, activation, loss):
    objective, params, batch = _problem(kind, activation, loss)
    h = nmelab.hessian(objective, params, batch).as_matrix()
    gn = nmelab.gauss_newton(objective, params, batch).as_matrix()
    nme = nmelab.nme(objective, params, batch).as_matrix()
    assert h.dtype == jnp.float64
    assert _rel_err(h, dense.dense_hessian(objective, params, batch)) <= 1e-10
    assert _rel_err(gn, dense.dense_gauss_newton(objective, params, batch)) <= 1e-10
    dense_nme = dense.dense_nme(objective, params, batch)
    assert float(jnp.linalg.norm(nme - dense_nme)) <= 1e-10 * float(jnp.linalg.norm(h))
    # H = GN + NME, and the symmetric flags are true.
    assert float(jnp.max(jnp.abs(h - gn - nme))) <= 1e-12 * max(1.0, float(jnp.max(jnp.abs(h))))
    for m in (h, gn, nme):
        assert float(jnp.max(jnp.abs(m - m.T))) <= 1e-12


@pytest.mark.parametrize("kind,activation,loss", PROBLEMS[:3] + PROBLEMS[6:7])
def test_gauss_newton_is_psd(kind, activation, loss):
    objective, params, batch = _problem(kind, activation, loss)
    op = nmelab.gauss_newton(objective, params, batch)
    assert op.psd and op.symmetric
    eigs = np.linalg.eigvalsh(np.asarray(op.as_matrix()))
    assert eigs.min() >= -1e-12 * eigs.max()
    # The NME is indefinite on a nonlinear net: both signs appear (tanh MLP).
    if activation == "tanh":
        nme_eigs = np.linalg.eigvalsh(np.asarray(nmelab.nme(objective, params, batch).as_matrix()))
        assert nme_eigs.min() < -1e-6 < 1e-6 < nme_eigs.max()


def test_products_match_matrices_and_split_product():
    objective, params, batch = tp.mlp_problem("gelu", "cross_entropy")
    v = tp.random_like(jax.random.PRNGKey(3), params)
    flat_v = ravel_pytree(v)[0]
    ops = [nmelab.hessian, nmelab.gauss_newton, nmelab.nme]
    matrices = [dense.dense_hessian, dense.dense_gauss_newton, dense.dense_nme]
    joint = nmelab.split_product(objective, params, batch, v)
    for op_fn, mat_fn, joint_v in zip(ops, matrices, joint, strict=True):
        op = op_fn(objective, params, batch)
        expected = mat_fn(objective, params, batch) @ flat_v
        for product in (op.mv(v), op @ v, op.linearize().mv(v), joint_v):
            np.testing.assert_allclose(ravel_pytree(product)[0], expected, rtol=1e-10, atol=1e-13)
    linear_joint = nmelab.linearize_split(objective, params, batch)(v)
    for a, b in zip(linear_joint, joint, strict=True):
        np.testing.assert_allclose(ravel_pytree(a)[0], ravel_pytree(b)[0], rtol=1e-10, atol=1e-13)


def test_nme_vanishes_for_linear_model_and_at_interpolation():
    objective, params, batch = tp.mlp_problem("linear", "mse", sizes=(4, 3))
    assert float(jnp.max(jnp.abs(nmelab.nme(objective, params, batch).as_matrix()))) == 0.0
    # Interpolating point of a nonlinear net: targets equal the outputs, so dL/dz = 0.
    objective, params, (x, _) = tp.mlp_problem("tanh", "mse")
    batch = (x, objective.outputs(params, x))
    assert float(jnp.max(jnp.abs(nmelab.nme(objective, params, batch).as_matrix()))) == 0.0
    # ... while the NME of the same net on other targets is not zero (the test can fail).
    objective, params, batch = tp.mlp_problem("tanh", "mse")
    assert float(jnp.max(jnp.abs(nmelab.nme(objective, params, batch).as_matrix()))) > 1e-3


def _layer_slices(params):
    """Index ranges of each layer's (w, b) in ravel order."""
    sizes = [layer["b"].size + layer["w"].size for layer in params]
    starts = np.cumsum([0, *sizes])
    return [slice(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True)]


@pytest.mark.parametrize("sizes", [(4, 6, 3), (4, 5, 4, 3), (3, 4, 4, 4, 3)])
def test_relu_nme_within_layer_blocks_are_exactly_zero(sizes):
    objective, params, batch = tp.mlp_problem("relu", "cross_entropy", sizes=sizes)
    nme = np.asarray(nmelab.nme(objective, params, batch).as_matrix())
    slices = _layer_slices(params)
    assert np.all(np.diag(nme) == 0.0)
    for s in slices:
        assert np.all(nme[s, s] == 0.0)
    cross = [np.abs(nme[a, b]).max() for i, a in enumerate(slices) for b in slices[i + 1 :]]
    assert max(cross) > 1e-3
    # GELU has a nonzero NME diagonal on the same net.
    objective = nmelab.Objective(tp.mlp_apply_fn("gelu"), "cross_entropy")
    assert (
        np.abs(np.diag(np.asarray(nmelab.nme(objective, params, batch).as_matrix()))).max() > 1e-4
    )


def test_vmap_over_v_and_no_recompilation():
    from nmelab.curvature import operator

    objective, params, batch = tp.mlp_problem("tanh", "cross_entropy")
    op = nmelab.hessian(objective, params, batch)
    vs = jax.vmap(lambda k: tp.random_like(k, params))(jax.random.split(jax.random.PRNGKey(0), 4))
    batched = jax.vmap(op.mv)(vs)
    for i in range(4):
        single = op.mv(jax.tree.map(lambda a, i=i: a[i], vs))
        np.testing.assert_allclose(
            ravel_pytree(jax.tree.map(lambda a, i=i: a[i], batched))[0],
            ravel_pytree(single)[0],
            rtol=1e-12,
        )
    jitted = jax.jit(lambda o, v: o.mv(v))
    jitted(op, tp.random_like(jax.random.PRNGKey(1), params))
    before = (jitted._cache_size(), operator._jitted_mv._cache_size())
    # New parameter values and a new vector with the same shapes: no new compilation.
    params2 = jax.tree.map(lambda a: a * 1.5, params)
    op2 = nmelab.hessian(objective, params2, batch)
    jitted(op2, tp.random_like(jax.random.PRNGKey(2), params))
    op2.mv(tp.random_like(jax.random.PRNGKey(2), params))
    op.mv(tp.random_like(jax.random.PRNGKey(4), params))
    after = (jitted._cache_size(), operator._jitted_mv._cache_size())
    assert after[0] == before[0]
    assert after[1] <= before[1] + 1  # the eager path compiles once, then is reused
    op2.mv(tp.random_like(jax.random.PRNGKey(5), params))
    assert operator._jitted_mv._cache_size() == after[1]


def test_float32_products_keep_dtype():
    objective, params, batch = tp.mlp_problem("tanh", "cross_entropy")
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    batch32 = (batch[0].astype(jnp.float32), batch[1])
    v = tp.random_like(jax.random.PRNGKey(0), params32)
    for make in (nmelab.hessian, nmelab.gauss_newton, nmelab.nme):
        out = make(objective, params32, batch32).mv(v)
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(out))
