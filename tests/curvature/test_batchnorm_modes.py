"""Models with state: BatchNorm in train mode (batch statistics) and eval mode (running ones)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import nmelab
from nmelab.curvature import dense


class TinyBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(4, param_dtype=jnp.float64)(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            param_dtype=jnp.float64,
            force_float32_reductions=False,  # float64 statistics for a float64 test
        )(x)
        return nn.Dense(3, param_dtype=jnp.float64)(jnp.tanh(x))


def _setup():
    model = TinyBN()
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 3), jnp.float64)
    y = jnp.array([0, 1, 2, 0, 1, 2])
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    stats = jax.tree.map(
        lambda a: a.astype(jnp.float64) + 0.3, variables["batch_stats"]
    )  # non-trivial running stats

    def train_apply(p, xb):
        return model.apply(
            {"params": p, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"]
        )

    def eval_apply(p, xb):
        return model.apply({"params": p, "batch_stats": stats}, xb, train=False)

    train_obj = nmelab.Objective(train_apply, "cross_entropy", has_aux=True)
    eval_obj = nmelab.Objective(eval_apply, "cross_entropy")
    return train_obj, eval_obj, variables["params"], (x, y), stats


def test_both_modes_match_dense_twins_and_split():
    train_obj, eval_obj, params, batch, _ = _setup()
    results = {}
    for name, objective in (("train", train_obj), ("eval", eval_obj)):
        h = nmelab.hessian(objective, params, batch).as_matrix()
        gn = nmelab.gauss_newton(objective, params, batch).as_matrix()
        nme = nmelab.nme(objective, params, batch).as_matrix()
        np.testing.assert_allclose(
            h, dense.dense_hessian(objective, params, batch), rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(
            gn, dense.dense_gauss_newton(objective, params, batch), rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(
            nme, dense.dense_nme(objective, params, batch), rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(h, gn + nme, rtol=0, atol=1e-12)
        results[name] = gn
    # The two modes are different functions of θ, hence different Gauss-Newton matrices.
    assert float(jnp.max(jnp.abs(results["train"] - results["eval"]))) > 1e-3


def test_train_mode_couples_examples_and_returns_statistics():
    train_obj, eval_obj, params, (x, y), stats = _setup()
    loss, aux = train_obj.value_and_aux(params, (x, y))
    assert "batch_stats" in aux
    assert not jnp.allclose(aux["batch_stats"]["BatchNorm_0"]["mean"], stats["BatchNorm_0"]["mean"])
    # In train mode one example's output depends on the others; in eval mode it does not.
    x2 = x.at[1].add(1.0)
    assert not jnp.allclose(train_obj.outputs(params, x)[0], train_obj.outputs(params, x2)[0])
    np.testing.assert_allclose(eval_obj.outputs(params, x)[0], eval_obj.outputs(params, x2)[0])
    assert eval_obj.value_and_aux(params, (x, y))[1] is None
