"""Cost of ``second_order_fidelity`` per ρ value, in gradients.

MLP 784-512-512-10 (ReLU), batch 128, float32. Times one jitted gradient and the jitted fidelity
with R = 1, 4 and 16 ρ values, interleaved round by round so that all cases see the same machine
load. The marginal cost per ρ is the slope of a least-squares line through t(R); the fixed part
(gradient at θ, the joint (H u, GN u, NME u) product) is its intercept. Both are reported in units
of one gradient. The design target is about 1 gradient per extra ρ (one gradient per ρ, batched
with vmap) and at most about 2 per ρ in total when several ρ share the fixed part.

Run: ``python benchmarks/bench_fidelity.py [--rounds 30]``.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import nmelab
from nmelab.estimators.fidelity import second_order_fidelity

SIZES = (784, 512, 512, 10)
BATCH = 128
NUM_RHOS = (1, 4, 16)


def apply_fn(params, x):
    h = x
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return h @ params[-1]["w"] + params[-1]["b"]


def make_problem(seed=0):
    key = jax.random.PRNGKey(seed)
    keys = jax.random.split(key, len(SIZES) + 1)
    params = [
        {
            "w": jax.random.normal(k, (m, n), jnp.float32) / jnp.sqrt(jnp.float32(m)),
            "b": jnp.zeros((n,), jnp.float32),
        }
        for k, m, n in zip(keys[:-2], SIZES[:-1], SIZES[1:], strict=True)
    ]
    x = jax.random.normal(keys[-2], (BATCH, SIZES[0]), jnp.float32)
    y = jax.random.randint(keys[-1], (BATCH,), 0, SIZES[-1])
    return nmelab.Objective(apply_fn, "cross_entropy"), params, (x, y)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    objective, params, batch = make_problem()
    grad_fn = jax.jit(jax.grad(objective.value))
    fid_fn = jax.jit(lambda p, b, r: second_order_fidelity(objective, p, b, r))
    rhos = {n: jnp.logspace(-3, -1, n, dtype=jnp.float32) for n in NUM_RHOS}
    cases = {"gradient": lambda: grad_fn(params, batch)}
    cases.update(
        {f"fidelity R={n}": (lambda r=r: fid_fn(params, batch, r)) for n, r in rhos.items()}
    )

    for fn in cases.values():  # compile and warm up
        jax.block_until_ready(fn())
        jax.block_until_ready(fn())

    times = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    med = {name: float(np.median(t)) for name, t in times.items()}

    t_grad = med["gradient"]
    t_fid = np.array([med[f"fidelity R={n}"] for n in NUM_RHOS])
    slope, intercept = np.polyfit(np.array(NUM_RHOS, float), t_fid, 1)

    print(
        f"backend {jax.default_backend()}, MLP {SIZES}, batch {BATCH}, float32, {args.rounds} rounds"
    )
    print(f"{'case':<16}{'median ms':>12}{'gradients':>12}{'per ρ':>12}")
    print(f"{'gradient':<16}{1e3 * t_grad:>12.3f}{1.0:>12.2f}{'':>12}")
    for n, t in zip(NUM_RHOS, t_fid, strict=True):
        print(f"{f'fidelity R={n}':<16}{1e3 * t:>12.3f}{t / t_grad:>12.2f}{t / t_grad / n:>12.2f}")
    print(f"marginal cost per ρ (slope)   : {slope / t_grad:.2f} gradients")
    print(f"fixed part (intercept)        : {intercept / t_grad:.2f} gradients")
    print(f"marginal per ρ, R=4 -> 16     : {(t_fid[2] - t_fid[1]) / 12 / t_grad:.2f} gradients")


if __name__ == "__main__":
    main()
