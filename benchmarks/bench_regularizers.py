"""Cost of one jitted train step with each regularizer, as a ratio to a plain SGD step.

Every step is ``reg.value_and_grad`` + ``optax.sgd`` update + ``apply_updates``; the baseline is
``jax.value_and_grad(objective.value)`` + the same update. All steps are compiled and warmed up
first, then timed in rounds, every step once per round in a shuffled order (each sample: enough
back-to-back calls of one step to last about 50 ms, then ``block_until_ready``), so that load
drift on a shared machine hits every method alike.
The table gives the median wall-clock ratio over rounds with its interquartile range, and the
median ratio of process CPU time (all XLA threads), which a loaded machine disturbs much less.
A row is ``ok`` when both medians are within its target.

Models (float32, batch 128, GELU): an MLP 784-512-512-10 and a small CNN on 32×32×3 images
(conv 16 → conv 32 stride 2 → conv 32 stride 2 → global mean → dense 10, 3×3 kernels).

Usage::

    python benchmarks/bench_regularizers.py [--rounds 15] [--models mlp,cnn] [--alternatives]

``--alternatives`` adds rows for the routes the library rejected (double backprop for the gradient
penalty, reverse-over-forward-over-reverse for the Hessian trace), measured the same way.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import nmelab  # noqa: E402
from nmelab import regularizers  # noqa: E402
from nmelab._tree import tree_sq_norm  # noqa: E402
from nmelab.estimators.probes import sample_probe  # noqa: E402

BATCH = 128
MIN_SAMPLE_S = 0.05  # each timed sample runs enough calls to last about this long
TARGETS = {  # by row label; rows without a target are informational
    "gradient_penalty p=1": 2.2,
    "gradient_penalty p=2": 2.2,
    "sam": 1.9,
    "usam": 1.9,
    "weight_noise": 1.1,
    "gn_trace": 2.5,
    "hessian_trace 1 probe": 4.0,
    "hessian_trace 1 gaussian probe": 4.0,
    "nme_trace 1 probe": 4.0,
}


def gelu(x):
    return jax.nn.gelu(x, approximate=False)


def mlp_problem(key):
    sizes = (784, 512, 512, 10)
    keys = jax.random.split(key, len(sizes))
    params = [
        {"w": jax.random.normal(k, (m, n)) / jnp.sqrt(m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys[:-1], sizes[:-1], sizes[1:], strict=True)
    ]

    def apply_fn(params, x):
        h = x
        for layer in params[:-1]:
            h = gelu(h @ layer["w"] + layer["b"])
        return h @ params[-1]["w"] + params[-1]["b"]

    x = jax.random.normal(keys[-1], (BATCH, 784))
    return apply_fn, params, x


def cnn_problem(key):
    k1, k2, k3, k4, kx = jax.random.split(key, 5)
    params = {
        "conv1": jax.random.normal(k1, (3, 3, 3, 16)) * (2 / 27) ** 0.5,
        "conv2": jax.random.normal(k2, (3, 3, 16, 32)) * (2 / 144) ** 0.5,
        "conv3": jax.random.normal(k3, (3, 3, 32, 32)) * (2 / 288) ** 0.5,
        "dense": jax.random.normal(k4, (32, 10)) * (1 / 32) ** 0.5,
    }

    def conv(x, w, stride):
        return jax.lax.conv_general_dilated(
            x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def apply_fn(params, x):
        h = gelu(conv(x, params["conv1"], 1))
        h = gelu(conv(h, params["conv2"], 2))
        h = gelu(conv(h, params["conv3"], 2))
        return jnp.mean(h, axis=(1, 2)) @ params["dense"]

    x = jax.random.normal(kx, (BATCH, 32, 32, 3))
    return apply_fn, params, x


def regularizer_rows():
    return [
        ("gradient_penalty p=1", regularizers.get("gradient_penalty", rho=0.1, p=1)),
        ("gradient_penalty p=2", regularizers.get("gradient_penalty", rho=0.1, p=2)),
        ("sam", regularizers.get("sam", rho=0.05)),
        ("usam", regularizers.get("usam", rho=0.05)),
        ("weight_noise", regularizers.get("weight_noise", sigma=0.01)),
        ("gn_trace", regularizers.get("gn_trace", sigma=0.05)),
        ("gn_trace per_example", regularizers.get("gn_trace", sigma=0.05, form="per_example")),
        ("hessian_trace 1 probe", regularizers.get("hessian_trace", sigma=0.05)),
        (
            "hessian_trace 1 gaussian probe",
            regularizers.get("hessian_trace", sigma=0.05, probe="gaussian"),
        ),
        ("hessian_trace 2 probes", regularizers.get("hessian_trace", sigma=0.05, num_probes=2)),
        ("nme_trace 1 probe", regularizers.get("nme_trace", sigma=0.05)),
    ]


def alternative_directions(objective):
    """The rejected routes, as ``(label, fn(params, batch, key) -> grads)``."""

    def loss(p, batch):
        return objective.value(p, batch)

    def double_backprop_penalty(params, batch, key):
        def penalized(p):
            g = jax.grad(loss)(p, batch)
            return loss(p, batch) + 0.1 * jnp.sqrt(tree_sq_norm(g))

        return jax.grad(penalized)(params)

    def reverse_over_hvp_trace(params, batch, key):
        v = sample_probe(key, params, "rademacher")

        def penalized(p):
            hv = jax.jvp(lambda q: jax.grad(loss)(q, batch), (p,), (v,))[1]
            quad = sum(
                jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(hv), strict=True)
            )
            return loss(p, batch) + 0.5 * 0.05**2 * quad

        return jax.grad(penalized)(params)

    return [
        ("(alt) gradient_penalty, double backprop", double_backprop_penalty),
        ("(alt) hessian_trace, reverse-over-FoR", reverse_over_hvp_trace),
    ]


def time_model(name, apply_fn, params, x, rounds, alternatives):
    objective = nmelab.Objective(apply_fn)
    y = jax.random.randint(jax.random.key(1), (BATCH,), 0, 10)
    batch = (x, y)
    optimizer = optax.sgd(0.01)
    opt_state = optimizer.init(params)
    key = jax.random.key(2)

    def update(grads, opt_state, params):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def sgd_step(params, opt_state, batch, key):
        value, grads = jax.value_and_grad(objective.value)(params, batch)
        return (*update(grads, opt_state, params), value)

    @jax.jit
    def reg_step(reg, params, opt_state, batch, key):
        value, grads = reg.value_and_grad(objective, params, batch, key)
        return (*update(grads, opt_state, params), value)

    steps = [("sgd", lambda: sgd_step(params, opt_state, batch, key))]
    for label, reg in regularizer_rows():
        steps.append((label, lambda reg=reg: reg_step(reg, params, opt_state, batch, key)))
    if alternatives:
        for label, direction_fn in alternative_directions(objective):
            alt = jax.jit(lambda p, s, b, k, f=direction_fn: update(f(p, b, k), s, p))
            steps.append((label, lambda alt=alt: alt(params, opt_state, batch, key)))

    for _, fn in steps:  # compile and warm up
        jax.block_until_ready(fn())
        jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(5):
        jax.block_until_ready(steps[0][1]())
    calls = max(1, round(MIN_SAMPLE_S / ((time.perf_counter() - start) / 5)))
    wall = {label: [] for label, _ in steps}
    cpu = {label: [] for label, _ in steps}
    order = random.Random(0)
    for _ in range(rounds):
        for label, fn in order.sample(steps, len(steps)):  # a fresh order every round
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                out = fn()
            jax.block_until_ready(out)
            wall[label].append((time.perf_counter() - start) / calls)
            cpu[label].append((time.process_time() - start_cpu) / calls)

    base, base_cpu = statistics.median(wall["sgd"]), statistics.median(cpu["sgd"])
    print(
        f"\n{name}: SGD step {1e3 * base:.1f} ms wall, {1e3 * base_cpu:.1f} ms CPU "
        f"(medians of {rounds} rounds of {calls} calls)"
    )
    print(f"  {'step':<40}{'wall':>7}{'wall IQR':>15}{'CPU':>7}{'target':>8}")
    for label, _ in steps:
        ts = sorted(t / base for t in wall[label])
        med, med_cpu = statistics.median(ts), statistics.median(cpu[label]) / base_cpu
        lo, hi = ts[len(ts) // 4], ts[(3 * len(ts)) // 4]
        target = TARGETS.get(label)
        target_s = "-" if target is None else f"{target:.1f}"
        mark = ""
        if target is not None:
            mark = "  ok" if max(med, med_cpu) <= target else "  OVER"
        print(f"  {label:<40}{med:7.2f}   [{lo:4.2f}, {hi:4.2f}]{med_cpu:7.2f}{target_s:>8}{mark}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--alternatives", action="store_true")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, float32, batch {BATCH}")
    print("wall, CPU = median step time / median SGD step time; IQR over rounds of the wall ratio")
    problems = {"mlp": ("MLP 784-512-512-10", mlp_problem), "cnn": ("CNN 32x32x3", cnn_problem)}
    for model in args.models.split(","):
        title, build = problems[model]
        apply_fn, params, x = build(jax.random.key(0))
        time_model(title, apply_fn, params, x, args.rounds, args.alternatives)


if __name__ == "__main__":
    main()
