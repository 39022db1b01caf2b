"""Tests of ``second_order_fidelity``: every metric against a dense float64 twin, plus the exact,
first-order and kink regimes the docstring promises."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nmelab
import toy_problems
from nmelab._tree import layer_names
from nmelab.curvature import dense
from nmelab.estimators.fidelity import (
    METRICS,
    PREDICTORS,
    fidelity_rows,
    fidelity_summary,
    second_order_fidelity,
)
from nmelab.estimators.probes import sample_probe

EPS = np.finfo(np.float64).eps
RHOS = [0.5, 1e-1, 1e-2]


# ----------------------------------------------------------------------------------------------
# The dense twin: Δg from two explicit gradients, H/GN/NME as matrices, metrics in numpy.


def dense_matrices(objective, params, batch):
    twins = {
        "hessian": dense.dense_hessian,
        "gauss_newton": dense.dense_gauss_newton,
        "nme": dense.dense_nme,
    }
    return {
        k: np.asarray(jax.jit(f, static_argnums=0)(objective, params, batch))
        for k, f in twins.items()
    }


def dense_reference(objective, params, batch, rhos, u_tree, mats):
    flat, unravel = ravel_pytree(params)
    u = np.asarray(ravel_pytree(u_tree)[0])
    u = u / np.linalg.norm(u)

    grad_fn = jax.jit(lambda f: ravel_pytree(jax.grad(objective.value)(unravel(f), batch))[0])

    def grad(f):
        return np.asarray(grad_fn(f))

    groups = np.concatenate(
        [
            np.full(np.size(leaf), name, dtype=object)
            for name, leaf in zip(layer_names(params), jax.tree.leaves(params), strict=True)
        ]
    )
    g0 = grad(flat)
    out = []
    for rho in rhos:
        d = grad(flat + rho * u) - g0
        blocks = {"all": np.ones(d.size, bool)}
        blocks.update({name: groups == name for name in dict.fromkeys(groups)})
        per_block = {}
        for block, mask in blocks.items():
            db = d[mask]
            entry = {"delta_norm": np.linalg.norm(db)}
            for name, mat in mats.items():
                a = rho * (np.asarray(mat) @ u)[mask]
                entry[name] = {
                    "cosine": a @ db / (np.linalg.norm(a) * np.linalg.norm(db)),
                    "norm_ratio": np.linalg.norm(db) / np.linalg.norm(a),
                    "residual": np.linalg.norm(db - a) / np.linalg.norm(db),
                    "predicted_norm": np.linalg.norm(a),
                }
            per_block[block] = entry
        per_block["rounding_floor"] = EPS * np.linalg.norm(g0) / np.linalg.norm(d)
        out.append(per_block)
    return out


def assert_matches_reference(result, reference):
    blocks = {"all": result, **result.layers}
    assert set(blocks) == set(reference[0]) - {"rounding_floor"}
    for i, ref in enumerate(reference):
        np.testing.assert_allclose(result.rounding_floor[i], ref["rounding_floor"], rtol=1e-8)
        for block_name, block in blocks.items():
            ref_block = ref[block_name]
            np.testing.assert_allclose(block.delta_norm[i], ref_block["delta_norm"], rtol=1e-10)
            for predictor in PREDICTORS:
                got, want = getattr(block, predictor), ref_block[predictor]
                np.testing.assert_allclose(got.cosine[i], want["cosine"], rtol=0, atol=1e-10)
                np.testing.assert_allclose(got.norm_ratio[i], want["norm_ratio"], rtol=1e-9)
                np.testing.assert_allclose(
                    got.predicted_norm[i], want["predicted_norm"], rtol=1e-10
                )
                # The residual of a near-exact prediction is itself at rounding level.
                np.testing.assert_allclose(
                    got.residual[i], want["residual"], rtol=1e-7, atol=1e3 * ref["rounding_floor"]
                )


@pytest.fixture(scope="module")
def tanh_problem():
    return toy_problems.mlp_problem("tanh", sizes=(4, 5, 4, 3), num=6, seed=0)


@pytest.fixture(scope="module")
def tanh_dense(tanh_problem):
    return dense_matrices(*tanh_problem)


@pytest.mark.parametrize(
    "direction", ["gradient", "random", pytest.param("given", marks=pytest.mark.slow)]
)
def test_matches_dense_twin(tanh_problem, tanh_dense, direction):
    objective, params, batch = tanh_problem
    key = jax.random.PRNGKey(7)
    if direction == "gradient":
        u = jax.grad(objective.value)(params, batch)
        result = second_order_fidelity(objective, params, batch, RHOS)
    elif direction == "random":
        u = sample_probe(key, params)
        result = second_order_fidelity(objective, params, batch, RHOS, "random", key=key)
    else:
        u = toy_problems.random_like(key, params)
        result = second_order_fidelity(objective, params, batch, RHOS, u)
    assert result.rho.shape == (len(RHOS),)
    assert result.hessian.cosine.shape == (len(RHOS),)
    assert list(result.layers) == ["0", "1", "2"]
    assert_matches_reference(result, dense_reference(objective, params, batch, RHOS, u, tanh_dense))
    # The per-layer blocks partition the parameters: squared norms add up.
    np.testing.assert_allclose(
        sum(b.delta_norm**2 for b in result.layers.values()), result.delta_norm**2, rtol=1e-12
    )


def test_random_direction_is_normalised_rademacher(tanh_problem):
    _, params, _ = tanh_problem
    probe = sample_probe(jax.random.PRNGKey(3), params)
    values = np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(probe)])
    assert set(np.unique(values)) == {-1.0, 1.0}
    # Different keys give different directions (and so different results).
    other = sample_probe(jax.random.PRNGKey(4), params)
    assert not np.array_equal(values, ravel_pytree(other)[0])


# ----------------------------------------------------------------------------------------------
# Exact regimes: a loss quadratic in θ.


def _quadratic_loss(z, y):
    # ½‖z_lin − y‖² (curvature through H_z: the GN part) plus the raw quadratic output (enters the
    # loss linearly: all its curvature is NME).
    return jnp.mean(0.5 * jnp.sum((z[:, :-1] - y) ** 2, axis=1) + z[:, -1])


def _quadratic_apply(params, x):
    theta = ravel_pytree(params)[0]
    lin_maps, sym = x
    quad = 0.5 * jnp.einsum("i,nij,j->n", theta, sym, theta)
    return jnp.concatenate([lin_maps @ theta, quad[:, None]], axis=1)


QUADRATIC = nmelab.Objective(_quadratic_apply, _quadratic_loss)


def quadratic_problem(num=3, k=2):
    key = jax.random.PRNGKey(11)
    kp, kl, ks, ky = jax.random.split(key, 4)
    params = {
        "enc": {"w": jax.random.normal(kp, (2, 2)), "b": jnp.array([0.3, -0.2])},
        "head": {"w": jnp.array([0.5, 1.5])},
    }
    dim = ravel_pytree(params)[0].size
    lin_maps = jax.random.normal(kl, (num, k, dim))
    a = jax.random.normal(ks, (num, dim, dim))
    sym = a + jnp.swapaxes(a, 1, 2)
    y = jax.random.normal(ky, (num, k))
    gn = np.mean(np.einsum("nki,nkj->nij", lin_maps, lin_maps), axis=0)
    nme_matrix = np.mean(np.asarray(sym), axis=0)
    return params, ((lin_maps, sym), y), gn, nme_matrix


@pytest.mark.parametrize("direction", ["gradient", pytest.param("given", marks=pytest.mark.slow)])
def test_quadratic_loss_is_exact_at_every_rho(direction):
    params, batch, gn, nme_matrix = quadratic_problem()
    rhos = [1e-4, 1e-2, 1.0, 100.0]
    g = jax.grad(QUADRATIC.value)(params, batch)
    u_tree = (
        g if direction == "gradient" else toy_problems.random_like(jax.random.PRNGKey(5), params)
    )
    result = second_order_fidelity(
        QUADRATIC, params, batch, rhos, u_tree if direction == "given" else "gradient"
    )

    # Δg = ρ H u exactly for a quadratic: only rounding separates them.
    tol = 100 * (np.asarray(result.rounding_floor) + EPS)
    np.testing.assert_array_less(np.abs(1 - np.asarray(result.hessian.cosine)), 1e-13)
    np.testing.assert_array_less(np.abs(1 - np.asarray(result.hessian.norm_ratio)), tol)
    np.testing.assert_array_less(np.asarray(result.hessian.residual), tol)
    for block in result.layers.values():
        np.testing.assert_array_less(np.abs(1 - np.asarray(block.hessian.cosine)), 1e-13)

    # The split is the analytic one: GN = mean LᵀL, NME = mean S; neither alone is exact.
    u = np.asarray(ravel_pytree(u_tree)[0])
    u = u / np.linalg.norm(u)
    rho = np.asarray(result.rho)
    np.testing.assert_allclose(
        result.gauss_newton.predicted_norm, rho * np.linalg.norm(gn @ u), rtol=1e-12
    )
    np.testing.assert_allclose(
        result.nme.predicted_norm, rho * np.linalg.norm(nme_matrix @ u), rtol=1e-12
    )
    np.testing.assert_array_less(1e-3, np.asarray(result.gauss_newton.residual))
    np.testing.assert_array_less(1e-3, np.asarray(result.nme.residual))


def test_linear_model_mse_nme_is_zero_and_gauss_newton_exact():
    objective, params, batch = toy_problems.mlp_problem("linear", "mse", sizes=(4, 3), num=6)
    rhos = [1e-3, 1e-1, 1.0, 10.0]
    result = second_order_fidelity(objective, params, batch, rhos)
    tol = 100 * (np.asarray(result.rounding_floor) + EPS)
    assert np.all(np.asarray(result.nme.predicted_norm) == 0.0)
    np.testing.assert_array_equal(result.nme.cosine, 0.0)
    np.testing.assert_array_equal(result.nme.residual, 1.0)
    for fid in (result.gauss_newton, result.hessian):
        np.testing.assert_array_less(np.abs(1 - np.asarray(fid.cosine)), 1e-13)
        np.testing.assert_array_less(np.abs(1 - np.asarray(fid.norm_ratio)), tol)
        np.testing.assert_array_less(np.asarray(fid.residual), tol)


# ----------------------------------------------------------------------------------------------
# Smooth networks: first order in ρ. ReLU: the kink.


def test_gelu_residual_falls_like_rho():
    objective, params, batch = toy_problems.mlp_problem("gelu", sizes=(4, 5, 4, 3), num=6)
    rhos = np.array([1e-1, 1e-2, 1e-3, 1e-4])
    result = second_order_fidelity(objective, params, batch, rhos)
    residual = np.asarray(result.hessian.residual)
    # The measurement is meaningful: the residual sits far above rounding at every ρ.
    np.testing.assert_array_less(1e3 * np.asarray(result.rounding_floor), residual)
    slope = np.polyfit(np.log(rhos), np.log(residual), 1)[0]
    assert abs(slope - 1) < 0.1, slope
    assert np.all(np.diff(np.asarray(result.hessian.cosine)) > 0)  # cosine -> 1 as ρ -> 0


DELTA = 1e-3  # distance of the chosen unit's pre-activation from the kink
UNIT = 1


def kink_problem(activation):
    """A one-hidden-layer net whose hidden unit ``UNIT`` has pre-activation +DELTA on example 0."""
    objective, params, (x, y) = toy_problems.mlp_problem(activation, sizes=(3, 4, 2), num=4, seed=1)
    pre = x @ params[0]["w"] + params[0]["b"]
    bias = params[0]["b"].at[UNIT].add(DELTA - pre[0, UNIT])
    params = [dict(params[0], b=bias), params[1]]
    # u = −e(b_UNIT): a step ρu lowers that unit's pre-activation by ρ on every example.
    u = jax.tree.map(jnp.zeros_like, params)
    u[0]["b"] = u[0]["b"].at[UNIT].set(-1.0)
    return objective, params, (x, y), u


def test_relu_cosine_drops_once_the_step_crosses_a_kink():
    objective, params, batch, u = kink_problem("relu")
    pre = np.asarray(batch[0] @ params[0]["w"] + params[0]["b"])[:, UNIT]
    np.testing.assert_allclose(pre[0], DELTA, rtol=1e-12)
    # Construction check: no other example of this unit has a kink within the largest step.
    others = pre[1:]
    assert np.all((others < 0) | (others > 20 * DELTA)), others

    below = [1e-7, 1e-6, 1e-5]  # ≤ DELTA / 100
    near = [0.5 * DELTA, 0.9 * DELTA]
    across = [1.1 * DELTA, 2 * DELTA, 5 * DELTA, 10 * DELTA]
    relu = second_order_fidelity(objective, params, batch, below + near + across, u)
    cos = np.asarray(relu.hessian.cosine)
    np.testing.assert_array_less(1 - cos[:3], 1e-10)
    np.testing.assert_array_less(1 - cos[3:5], 1e-6)
    np.testing.assert_array_less(cos[5:], 0.5)
    # Past the kink Δg carries the unit's lost gradient, which ρ H u never sees.
    np.testing.assert_array_less(10.0, np.asarray(relu.hessian.norm_ratio)[5:])
    np.testing.assert_array_less(0.9, np.asarray(relu.hessian.residual)[5:])

    objective, params, batch, u = kink_problem("gelu")
    gelu = second_order_fidelity(objective, params, batch, below + near + across, u)
    np.testing.assert_array_less(1 - np.asarray(gelu.hessian.cosine), 1e-5)
    np.testing.assert_array_less(np.asarray(gelu.hessian.residual), 1e-2)


# ----------------------------------------------------------------------------------------------
# vmap over ρ, jit, dtypes.


def test_vmap_over_rho_matches_loop(tanh_problem):
    objective, params, batch = tanh_problem
    together = second_order_fidelity(objective, params, batch, RHOS)
    for i, rho in enumerate(RHOS):
        alone = second_order_fidelity(objective, params, batch, rho)
        assert alone.rho.shape == (1,)
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(together), strict=True):
            np.testing.assert_allclose(a[0], b[i], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "direction",
    [
        "gradient",
        pytest.param("random", marks=pytest.mark.slow),
        pytest.param("given", marks=pytest.mark.slow),
    ],
)
def test_works_under_jit(tanh_problem, direction):
    objective, params, batch = tanh_problem
    key = jax.random.PRNGKey(2)
    given = toy_problems.random_like(key, params)
    if direction == "gradient":
        fn, extra = (lambda p, b, r: second_order_fidelity(objective, p, b, r)), ()
    elif direction == "random":
        fn, extra = (
            (lambda p, b, r, k: second_order_fidelity(objective, p, b, r, "random", key=k)),
            (key,),
        )
    else:
        fn, extra = (lambda p, b, r, d: second_order_fidelity(objective, p, b, r, d)), (given,)
    eager = fn(params, batch, RHOS, *extra)
    jitted = jax.jit(fn)(params, batch, jnp.asarray(RHOS), *extra)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_float32_params_give_float32_results(tanh_problem):
    objective, params, batch = tanh_problem
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    x, y = batch
    result32 = second_order_fidelity(objective, params32, (x.astype(jnp.float32), y), RHOS)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(result32))
    result64 = second_order_fidelity(objective, params, batch, RHOS)
    # float32 agrees with float64 up to float32 rounding of Δg (the floor) and of the products.
    floor = float(np.max(result32.rounding_floor))
    assert floor < 1e-4
    for metric in ("cosine", "residual"):
        np.testing.assert_allclose(
            getattr(result32.hessian, metric),
            getattr(result64.hessian, metric),
            rtol=0,
            atol=100 * floor,
        )


# ----------------------------------------------------------------------------------------------
# Layers, summaries, bad input.


def test_layer_names():
    assert layer_names([{"w": 1.0, "b": 2.0}, {"w": 3.0, "b": 4.0}]) == ["0", "0", "1", "1"]
    assert layer_names({"conv1": 1.0, "dense": 2.0}) == ["conv1", "dense"]
    flax_like = {
        "params": {"Dense_0": {"bias": 1.0, "kernel": 2.0}, "Block_0": {"Dense_1": {"kernel": 3.0}}}
    }
    assert layer_names(flax_like) == ["params/Block_0/Dense_1", "params/Dense_0", "params/Dense_0"]
    assert layer_names(jnp.zeros(3)) == ["params"]


def test_summary_and_rows(tanh_problem):
    objective, params, batch = tanh_problem
    result = second_order_fidelity(objective, params, batch, [0.1, 0.01, 0.5])
    summary = fidelity_summary(result)
    assert summary["fidelity/rho=0.1/hessian/cosine"] == float(result.hessian.cosine[0])
    assert summary["fidelity/rho=0.01/nme/residual"] == float(result.nme.residual[1])
    assert summary["fidelity/rho=0.01/delta_norm"] == float(result.delta_norm[1])
    assert len(summary) == 3 * (len(PREDICTORS) * len(METRICS) + 2)
    assert all(isinstance(v, float) for v in summary.values())
    with_layers = fidelity_summary(result, "probe", layers=True)
    assert with_layers["probe/rho=0.1/layer=2/gauss_newton/norm_ratio"] == float(
        result.layers["2"].gauss_newton.norm_ratio[0]
    )

    rows = fidelity_rows(result, activation="tanh", step=3)
    assert len(rows) == 3 * (1 + len(result.layers)) * len(PREDICTORS)
    row = next(
        r for r in rows if r["rho"] == 0.01 and r["layer"] == "1" and r["predictor"] == "nme"
    )
    assert row["activation"] == "tanh" and row["step"] == 3
    assert row["cosine"] == float(result.layers["1"].nme.cosine[1])
    assert row["delta_norm"] == float(result.layers["1"].delta_norm[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rho": 0.0}, "rho must be finite and > 0"),
        ({"rho": -0.1}, "rho must be finite and > 0"),
        ({"rho": [0.1, -1e-3]}, r"rho must be finite and > 0.*-0\.001"),
        ({"rho": [0.1, float("nan")]}, "rho must be finite"),
        ({"rho": []}, "at least one value"),
        ({"rho": [[0.1]]}, "1-D"),
        ({"rho": "big"}, "rho must be a float"),
        ({"rho": 0.1, "direction": "hessian"}, "direction must be 'gradient', 'random'"),
        ({"rho": 0.1, "direction": "random"}, "direction='random' needs a key"),
        ({"rho": 0.1, "direction": "zeros"}, "direction must be nonzero"),
        ({"rho": 0.1, "direction": "wrong_structure"}, "direction must have the tree structure"),
        ({"rho": 0.1, "direction": "wrong_shape"}, r"direction\[0\]\['w'\] must have shape"),
    ],
)
def test_bad_input(tanh_problem, kwargs, match):
    objective, params, batch = tanh_problem
    special = {
        "zeros": jax.tree.map(jnp.zeros_like, params),
        "wrong_structure": params[:2],
        "wrong_shape": [dict(params[0], w=params[0]["w"][:2]), *params[1:]],
    }
    kwargs = dict(kwargs)
    if kwargs.get("direction") in special:
        kwargs["direction"] = special[kwargs["direction"]]
    with pytest.raises(ValueError, match=match):
        second_order_fidelity(objective, params, batch, **kwargs)


def test_float32_rho_that_underflows_is_rejected():
    objective, params, batch = toy_problems.mlp_problem("tanh", sizes=(4, 3), num=2)
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    with pytest.raises(ValueError, match="float32"):
        second_order_fidelity(objective, params32, batch, 1e-50)


def test_bad_objective_and_batch(tanh_problem):
    objective, params, batch = tanh_problem
    with pytest.raises(TypeError, match="objective must be an nmelab.Objective"):
        second_order_fidelity(objective.apply_fn, params, batch, 0.1)
    with pytest.raises(ValueError, match="batch must be a pair"):
        second_order_fidelity(objective, params, batch[0], 0.1)
