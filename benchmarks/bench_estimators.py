"""Cost of nmelab's estimators as ratios to one gradient, measured side by side in one run.

Model: MLP 784-1024-1024-10 (1.86M params), batch 256, float32, random data (the default). Every
function is jitted, warmed up once (compilation excluded), then timed with ``block_until_ready``;
the rounds interleave all functions so that load drifting on a shared machine hits them alike, and
the median over rounds is reported (and, as a check on a loaded machine, the ratio of minima).
Ratios are to the time of one jitted gradient.

``--model cnn`` runs the same estimators on the small CNN of ``benchmarks/peers`` (2 conv + 2 dense,
max-pool, batch 128, 32x32x3), where every estimator takes its Python loop over one jitted step
(``loop="auto"``; ``--loop compiled`` forces the ``lax`` loops, 20-50x slower there on XLA:CPU).
The peers on the same workloads: ``benchmarks/peers/run.py`` (docs/benchmarks.md).

Run:  python benchmarks/bench_estimators.py [--model mlp|cnn] [--repeats 7] [--hidden 1024 1024]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import nmelab
from nmelab.curvature.hessian import hessian_vector_product

TARGETS = {"trace H (forward-only forms)": 10, "lanczos 20 steps": 25}


def mlp(sizes, activation, key, dtype):
    keys = jax.random.split(key, len(sizes) - 1)
    params = [
        {
            "w": jax.random.normal(k, (m, n), dtype) / jnp.sqrt(m).astype(dtype),
            "b": jnp.zeros((n,), dtype),
        }
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]
    act = {"relu": jax.nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False)}[activation]

    def apply_fn(params, x):
        h = x
        for layer in params[:-1]:
            h = act(h @ layer["w"] + layer["b"])
        return h @ params[-1]["w"] + params[-1]["b"]

    return apply_fn, params


def _hvp_generic(objective, params, batch, v):
    # Same product as nmelab.hessian, but not recognised by the forward-only route: trace() then
    # linearizes inside its jit and uses <v, H v>, which is what a product-based estimator costs.
    return hessian_vector_product(objective, params, batch, v)


@functools.partial(jax.jit, static_argnums=2)
def power(lin, v, num_steps):
    """Plain power iteration on the linearized Hessian: the loop cost without reorthogonalization."""

    def step(u, _):
        w = lin.mv(u)
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(w)))
        return jax.tree.map(lambda leaf: leaf / norm, w), None

    return jax.lax.scan(step, v, None, length=num_steps)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024, 1024])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--activation", choices=("relu", "gelu"), default="relu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--loop", choices=("auto", "compiled", "python"), default="auto")
    args = parser.parse_args()

    dtype = jnp.float32
    key = jax.random.key(0)
    sizes = [784, *args.hidden, 10]
    if args.model == "mlp":
        apply_fn, params = mlp(sizes, args.activation, key, dtype)
        x = jax.random.normal(jax.random.fold_in(key, 1), (args.batch, 784), dtype)
        y = jax.random.randint(jax.random.fold_in(key, 2), (args.batch,), 0, 10)
        batch = (x, y)
        objective = nmelab.Objective(apply_fn, "cross_entropy")
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
        from nmelab_side import problem

        objective, params, batch = problem("cnn")
        sizes = ["small CNN"]
    loop = args.loop
    hessian = nmelab.hessian(objective, params, batch)
    gauss_newton = nmelab.gauss_newton(objective, params, batch)
    generic = dataclasses.replace(hessian, product_fn=_hvp_generic)
    lin = hessian.linearize()
    probe_key = jax.random.key(1)
    num_params = hessian.num_params

    grad = jax.jit(jax.grad(objective.value))
    hvp = jax.jit(hessian_vector_product, static_argnums=0)
    v = jax.tree.map(jnp.ones_like, params)
    cases = {
        "gradient": lambda: grad(params, batch),
        "HVP (forward-over-reverse)": lambda: hvp(objective, params, batch, v),
        "HVP, linearized (product only)": lambda: lin.mv(v),
        "trace H (forward-only forms)": lambda: (
            nmelab.trace(hessian, probe_key, 10, loop=loop).value
        ),
        "trace H (linearize + 10 HVPs)": lambda: (
            nmelab.trace(generic, probe_key, 10, loop=loop).value
        ),
        "trace GN (10 JVP forms)": lambda: (
            nmelab.trace(gauss_newton, probe_key, 10, loop=loop).value
        ),
        "trace_split H/GN/NME, 10 probes": lambda: (
            nmelab.trace_split(objective, params, batch, probe_key, 10, loop=loop).hessian.value
        ),
        "GN trace eq. 20, 10 samples": lambda: (
            nmelab.gn_trace_sampled(objective, params, batch, probe_key, 10, loop=loop).value
        ),
        "GN trace eq. 20 per example, 1 sample": lambda: (
            nmelab.gn_trace_sampled(
                objective, params, batch, probe_key, 1, form="per_example", loop=loop
            ).value
        ),
        "hutch++ H, 12 products": lambda: (
            nmelab.trace(hessian, probe_key, 12, method="hutchpp", loop=loop).value
        ),
        "diagonal H, 10 probes": lambda: nmelab.diagonal(hessian, probe_key, 10, loop=loop).stderr,
        "power iteration 20 steps (reference)": lambda: power(lin, v, 20),
        "lanczos 20 steps": lambda: (
            nmelab.eigenpairs(hessian, 1, "largest", probe_key, 20, loop=loop).eigenvalues
        ),
        "SLQ 1 probe x 20 steps": lambda: (
            nmelab.spectral_density(hessian, probe_key, 1, 20, loop=loop).nodes
        ),
        "fidelity, 3 rho": lambda: (
            nmelab.second_order_fidelity(
                objective, params, batch, [1e-1, 1e-2, 1e-3], loop=loop
            ).hessian.cosine
        ),
    }
    if args.model == "cnn":  # the scan of the reference power iteration is the slow loop itself
        del cases["power iteration 20 steps (reference)"]
    print(
        f"{'-'.join(map(str, sizes))}, {num_params:,} params, batch {batch[0].shape[0]}, "
        f"loop={loop}; {jax.devices()[0].device_kind}; "
        f"median of {args.repeats} interleaved rounds after warm-up"
    )
    for name, fn in cases.items():  # warm-up: compile everything first
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        print(f"  compiled {name:<34s} {time.perf_counter() - t0:6.1f} s", flush=True)
    times = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    minima = {name: min(ts) for name, ts in times.items()}
    base, base_min = medians["gradient"], minima["gradient"]
    print(
        f"\n{'estimator':<38s} {'median ms':>10s} {'x gradient':>11s} {'(min-based)':>12s}"
        "  target / peers"
    )
    for name, median in medians.items():
        note = ""
        if name in TARGETS:
            note = f"target <= {TARGETS[name]}"
        print(
            f"{name:<38s} {1e3 * median:10.1f} {median / base:11.2f} "
            f"{minima[name] / base_min:12.2f}  {note}"
        )


if __name__ == "__main__":
    main()
