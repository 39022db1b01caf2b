"""Weight decay: the named masks, SAM/USAM with the decay inside the perturbed loss, the record.

SAM with ``weight_decay=λ`` is checked against a dense float64 closed form of google-research/sam's
update: SAM on ``F(θ) = L(θ) + (λ/2)‖m ⊙ θ‖²``, whose direction is ``∇F(θ + ε)`` with
``ε = ρ∇F(θ)/‖∇F(θ)‖`` (USAM: ``ε = ρ∇F(θ)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from regularizer_helpers import dense_value_grad, flat, problem_for, run

from nmelab import models, regularizers
from nmelab.regularizers.weight_decay import WEIGHT_DECAY_MASKS, weight_decay_mask
from nmelab.train.optim import sgd


def _resnet_tiny_params():
    model = models.get("resnet_tiny")
    x = jnp.zeros((2, 16, 16, 3), jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))["params"]


def _paths(tree):
    return [
        "/".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)
    ]


def test_masks_on_a_resnet_name_exactly_the_leaves_they_promise():
    params = _resnet_tiny_params()
    paths = _paths(params)
    ndims = [len(leaf.shape) for leaf in jax.tree.leaves(params)]
    is_bn = [("BatchNorm" in p or "bn_init" in p or "norm_proj" in p) for p in paths]
    assert any(is_bn) and "head/bias" in paths
    masks = {kind: jax.tree.leaves(weight_decay_mask(params, kind)) for kind in WEIGHT_DECAY_MASKS}
    assert masks["all"] == [True] * len(paths)
    # Goyal et al. §5.1: every BN γ and β exempt, everything else (the head's bias too) decayed
    assert masks["no_bn"] == [not bn for bn in is_bn]
    # google-research/sam's no_weight_decay_on_bn rule: only leaves with ndim > 1
    assert masks["no_bn_and_bias"] == [n > 1 for n in ndims]
    assert sum(masks["no_bn"]) == sum(masks["no_bn_and_bias"]) + 1  # the head's bias


def test_unknown_mask_is_refused_by_name():
    with pytest.raises(ValueError, match="weight_decay_mask: expected one of all, no_bn"):
        weight_decay_mask({"w": jnp.ones(2)}, "no_bn_bias")
    with pytest.raises(ValueError, match="sam: weight_decay_mask"):
        regularizers.get("sam", rho=0.1, weight_decay_mask="none")
    with pytest.raises(ValueError, match="weight_decay .*must be >= 0"):
        regularizers.get("sam", rho=0.1, weight_decay=-1.0)


@pytest.mark.parametrize("kind", WEIGHT_DECAY_MASKS)
def test_optimizer_decays_exactly_the_masked_leaves(kind):
    params = jax.tree.map(lambda s: jnp.ones(s.shape, jnp.float32), _resnet_tiny_params())
    tx = sgd(optax.constant_schedule(1.0), 0.0, False, 0.5, kind)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    for update, keep in zip(
        jax.tree.leaves(updates), jax.tree.leaves(weight_decay_mask(params, kind)), strict=True
    ):
        np.testing.assert_array_equal(update, -0.5 if keep else 0.0)


def _mask_vector(params, kind):
    mask = weight_decay_mask(params, kind)
    return flat(jax.tree.map(lambda p, m: jnp.full(p.shape, float(m), p.dtype), params, mask))


@pytest.mark.parametrize("kind", ["all", "no_bn_and_bias"])
@pytest.mark.parametrize("name", ["sam", "usam"])
def test_sam_with_decay_in_the_loss_is_the_reference_update(name, kind):
    # regularizer direction + the optimizer's λ m⊙θ == ∇F(θ + ε), ε from ∇F(θ), F = L + λ/2‖m⊙θ‖²
    objective, params, batch = problem_for("tanh")
    rho, lam = 0.2, 0.3
    vec, unravel = ravel_pytree(params)
    m = _mask_vector(params, kind)
    assert 0 < float(m.sum()) <= m.size

    def dense_f_grad(v):
        value, g = dense_value_grad(objective, unravel(v), batch)
        return value, g + lam * m * v

    _, a = dense_f_grad(vec)
    step = rho * a / jnp.linalg.norm(a) if name == "sam" else rho * a
    want_value, _ = dense_value_grad(objective, unravel(vec + step), batch)
    _, want = dense_f_grad(vec + step)

    reg = regularizers.get(name, rho=rho, weight_decay=lam, weight_decay_mask=kind)
    value, grads = run(reg, objective, params, batch)
    np.testing.assert_allclose(flat(grads) + lam * m * vec, want, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(value, want_value, rtol=1e-13)
    # and it is a different algorithm from the decay kept out of the ascent step
    _, plain = run(regularizers.get(name, rho=rho), objective, params, batch)
    assert np.max(np.abs(flat(plain) + lam * m * vec - want)) > 1e-3


def test_one_optimizer_step_matches_google_research_sam():
    # θ' = θ − η ∇F(θ + ε): plain SGD (no momentum) on the loss with the decay inside
    objective, params, batch = problem_for("tanh")
    rho, lam, lr = 0.1, 0.05, 0.5
    tx = sgd(optax.constant_schedule(lr), 0.0, False, lam, "all")
    reg = regularizers.get("sam", rho=rho, weight_decay=lam)
    _, direction = run(reg, objective, params, batch)
    updates, _ = tx.update(direction, tx.init(params), params)
    new = flat(optax.apply_updates(params, updates))

    vec, unravel = ravel_pytree(params)
    grad_f = lambda v: dense_value_grad(objective, unravel(v), batch)[1] + lam * v  # noqa: E731
    a = grad_f(vec)
    np.testing.assert_allclose(
        new, vec - lr * grad_f(vec + rho * a / jnp.linalg.norm(a)), rtol=1e-11
    )


def test_zero_decay_is_the_plain_sam_step_bit_for_bit():
    objective, params, batch = problem_for("tanh")
    _, plain = run(regularizers.get("sam", rho=0.2), objective, params, batch)
    _, zero = run(regularizers.get("sam", rho=0.2, weight_decay=0.0), objective, params, batch)
    np.testing.assert_array_equal(flat(plain), flat(zero))


def test_one_compiled_step_serves_every_decay_value():
    a = regularizers.get("sam", rho=0.2, weight_decay=0.1)
    b = regularizers.get("sam", rho=0.3, weight_decay=0.2)
    assert jax.tree.structure(a) == jax.tree.structure(b)  # λ is a leaf: no recompilation


def test_record_spells_out_every_hyperparameter_and_the_probe():
    assert regularizers.get("hessian_trace", sigma=0.1).record() == {
        "name": "hessian_trace",
        "sigma": 0.1,
        "num_probes": 1,
        "probe": "gaussian",
    }
    assert (
        regularizers.get("nme_trace", sigma=1, probe="rademacher").record()["probe"] == "rademacher"
    )
    assert regularizers.get("sam", rho=0.05).record() == {
        "name": "sam",
        "rho": 0.05,
        "weight_decay": 0.0,
        "weight_decay_mask": "all",
    }
    assert regularizers.get("none").record() == {"name": "none"}


def test_the_default_probe_is_the_papers_gaussian():
    # eq. 19: ε ~ N(0, I); the default draws the same probes as probe="gaussian"
    objective, params, batch = problem_for("tanh")
    key = jax.random.key(4)
    for name in ("hessian_trace", "nme_trace"):
        default = regularizers.get(name, sigma=0.5)
        assert default == regularizers.get(name, sigma=0.5, probe="gaussian")
        v_default, _ = run(default, objective, params, batch, key)
        v_rad, _ = run(
            regularizers.get(name, sigma=0.5, probe="rademacher"), objective, params, batch, key
        )
        assert v_default != v_rad
