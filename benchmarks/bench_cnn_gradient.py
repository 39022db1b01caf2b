"""Why a JAX gradient of a small CNN costs more than torch's on XLA:CPU: pooling and layout.

The small CNN of ``benchmarks/peers`` (2 conv + 2 dense, 2x2 max-pool, batch 128, 32x32x3) with
its pooling and layout varied, all timed round-robin in one process (medians, ms, and the ratio
to the default ``flax.linen.max_pool`` NHWC gradient):

* ``max_pool``: ``lax.reduce_window`` max; its gradient is ``select_and_scatter``.
* ``reshape_max``: the same function for non-overlapping 2x2 windows, as a reshape and a ``max``
  over the window axes; its gradient is an elementwise compare-and-select.
* ``avg_pool`` (a different function, for scale), and ``no_pool`` with stride-2 convolutions.
* ``nchw``: the ``max_pool`` network with NCHW activations and OIHW kernels
  (``lax.conv_general_dilated`` dimension numbers), torch's layout.

A second table splits the convolutions' own cost: each layer's forward convolution, its input
gradient (a transposed convolution) and its kernel gradient, each as its own jitted program. Their
sum bounds from below what any change of pooling or layout can reach.

XLA flags are per process: run this script again with ``XLA_FLAGS=...`` to compare them.

Run:  python benchmarks/bench_cnn_gradient.py [--repeats 9]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from timing import print_table, time_interleaved

BATCH, SIZE, CHANNELS, HIDDEN, CLASSES = 128, 32, (3, 32, 64), 128, 10


def init(key):
    keys = jax.random.split(key, 4)
    c0, c1, c2 = CHANNELS
    flat = c2 * (SIZE // 4) ** 2
    return {
        "conv0": jax.random.normal(keys[0], (3, 3, c0, c1)) * 0.2,
        "conv1": jax.random.normal(keys[1], (3, 3, c1, c2)) * 0.05,
        "dense0": jax.random.normal(keys[2], (flat, HIDDEN)) * 0.02,
        "dense1": jax.random.normal(keys[3], (HIDDEN, CLASSES)) * 0.1,
    }


def max_pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def reshape_max(x):
    n, h, w, c = x.shape
    return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def avg_pool(x):
    n, h, w, c = x.shape
    return jnp.mean(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


NHWC = ("NHWC", "HWIO", "NHWC")


def conv(x, kernel, stride=1, dims=NHWC):
    """A 'SAME' convolution with the given stride and dimension numbers."""
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=dims)


def network(pool, stride=1, layout="NHWC"):
    dims = NHWC if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")

    def apply(params, x):
        for name in ("conv0", "conv1"):
            kernel = params[name] if layout == "NHWC" else params[name].transpose(3, 2, 0, 1)
            x = jax.nn.relu(conv(x, kernel, stride, dims))
            if pool is not None:
                if layout == "NCHW":
                    x = pool(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
                else:
                    x = pool(x)
        x = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["dense0"])
        return x @ params["dense1"]

    return apply


def conv_parts(params, x) -> dict:
    """Zero-argument timers for each convolution's forward, input and kernel gradients."""
    forward = jax.jit(conv)
    input_grad = jax.jit(lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0])
    kernel_grad = jax.jit(lambda x, k, g: jax.vjp(lambda k: conv(x, k), k)[1](g)[0])
    fns = {}
    for name in ("conv0", "conv1"):
        kernel = params[name]
        g = jnp.ones((*x.shape[:-1], kernel.shape[-1]), x.dtype)
        fns[f"{name} forward"] = lambda x=x, k=kernel: forward(x, k)
        if name != "conv0":  # the first layer's input gradient is never needed
            fns[f"{name} input gradient"] = lambda x=x, k=kernel, g=g: input_grad(x, k, g)
        fns[f"{name} kernel gradient"] = lambda x=x, k=kernel, g=g: kernel_grad(x, k, g)
        x = reshape_max(jax.nn.relu(forward(x, kernel)))
    return fns


def gradient_fn(apply):
    def loss(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(apply(params, x), y).mean()

    return jax.jit(jax.grad(loss))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    params = init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (BATCH, SIZE, SIZE, CHANNELS[0]))
    x_nchw = x.transpose(0, 3, 1, 2)
    y = jax.random.randint(jax.random.key(2), (BATCH,), 0, CLASSES)
    variants = {
        "max_pool": (network(max_pool), x),
        "reshape_max": (network(reshape_max), x),
        "avg_pool": (network(avg_pool), x),
        "no_pool (stride 2)": (network(None, stride=2), x),
        "max_pool, NCHW": (network(max_pool, layout="NCHW"), x_nchw),
    }
    grads = {name: (gradient_fn(apply), inputs) for name, (apply, inputs) in variants.items()}
    ref = grads["max_pool"][0](params, x, y)
    same = grads["reshape_max"][0](params, x, y)
    err = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(same), strict=True)
    )
    fns = {name: (lambda g=g, i=i: g(params, i, y)) for name, (g, i) in grads.items()}
    parts = conv_parts(params, x)
    times = time_interleaved({**fns, **parts}, args.repeats)
    base = times["max_pool"]
    rows = [(name, f"{1e3 * times[name]:.1f}", f"{times[name] / base:.2f}") for name in fns]
    print_table("Small CNN gradient on XLA:CPU", rows, ("variant", "ms", "ratio"))
    rows = [(name, f"{1e3 * times[name]:.1f}", f"{times[name] / base:.2f}") for name in parts]
    total = sum(times[name] for name in parts)
    rows.append(("sum of the convolutions", f"{1e3 * total:.1f}", f"{total / base:.2f}"))
    print_table(
        "Its convolutions alone (ratio to the max_pool gradient)", rows, ("part", "ms", "ratio")
    )
    print(f"\nmax |grad(max_pool) - grad(reshape_max)| = {err:.2e}")


if __name__ == "__main__":
    main()
