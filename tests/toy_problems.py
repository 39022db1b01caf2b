"""Tiny float64 problems shared by the tests: plain-jnp MLPs and a CNN with exact parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import nmelab

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "linear": lambda x: x,
}


def mlp_params(key, sizes, dtype=jnp.float64):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "w": jax.random.normal(k, (m, n), dtype) / jnp.sqrt(m),
            "b": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (n,), dtype),
        }
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp_apply_fn(activation):
    act = ACTIVATIONS[activation] if isinstance(activation, str) else activation

    def apply_fn(params, x):
        h = x
        for layer in params[:-1]:
            h = act(h @ layer["w"] + layer["b"])
        return h @ params[-1]["w"] + params[-1]["b"]

    return apply_fn


def cnn_params(key, channels=3, num_classes=3, dtype=jnp.float64):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "conv1": 0.4 * jax.random.normal(k1, (3, 3, channels, 4), dtype),
        "conv2": 0.3 * jax.random.normal(k2, (3, 3, 4, 4), dtype),
        "dense": 0.3 * jax.random.normal(k3, (4, num_classes), dtype),
    }


def cnn_apply_fn(activation):
    act = ACTIVATIONS[activation]

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def apply_fn(params, x):
        h = act(conv(x, params["conv1"]))
        h = act(conv(h, params["conv2"]))
        return jnp.mean(h, axis=(1, 2)) @ params["dense"]

    return apply_fn


def mlp_problem(activation="tanh", loss="cross_entropy", sizes=(4, 5, 4, 3), num=6, seed=0):
    """Return ``(objective, params, batch)`` for a tiny MLP classification problem."""
    key = jax.random.PRNGKey(seed)
    kp, kx, ky = jax.random.split(key, 3)
    params = mlp_params(kp, sizes)
    x = jax.random.normal(kx, (num, sizes[0]), jnp.float64)
    y = jax.random.randint(ky, (num,), 0, sizes[-1])
    return nmelab.Objective(mlp_apply_fn(activation), loss), params, (x, y)


def cnn_problem(activation="tanh", loss="cross_entropy", num=3, seed=0):
    """Return ``(objective, params, batch)`` for a tiny CNN on 5x5x3 images."""
    key = jax.random.PRNGKey(seed)
    kp, kx, ky = jax.random.split(key, 3)
    params = cnn_params(kp)
    x = jax.random.normal(kx, (num, 5, 5, 3), jnp.float64)
    y = jax.random.randint(ky, (num,), 0, 3)
    return nmelab.Objective(cnn_apply_fn(activation), loss), params, (x, y)


def random_like(key, params):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef,
        [
            jax.random.normal(k, leaf.shape, leaf.dtype)
            for k, leaf in zip(keys, leaves, strict=True)
        ],
    )
