"""Cost of the curvature products relative to one gradient, measured side by side in one run.

    python benchmarks/bench_curvature.py [--repeats 15]

Targets, MLP 784-512-512-10, batch 128, float32, CPU: HVP ≤ 1.8, GN·v ≤ 1.5,
NME·v ≤ 1.8, joint ≤ 2.3, product after linearizing ≤ 1.3 gradients. For reference, curvlinops'
HVP costs 2.6 gradients and its GGN product 1.9 on this kind of machine.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from timing import peak_bytes, print_table, time_interleaved  # noqa: E402

import nmelab  # noqa: E402
from nmelab import curvature  # noqa: E402
from nmelab.curvature.gauss_newton import linearize_gauss_newton  # noqa: E402
from nmelab.curvature.hessian import linearize_hessian  # noqa: E402
from nmelab.curvature.nme import linearize_nme  # noqa: E402
from nmelab.curvature.split import _split_product as split_product_jit  # noqa: E402


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        for width in (512, 512):
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(10)(x)


class SmallCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        for channels in (32, 64, 64):
            x = nn.relu(nn.Conv(channels, (3, 3))(x))
            x = nn.avg_pool(x, (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def bench(model: nn.Module, x: jax.Array, repeats: int) -> list[tuple[str, ...]]:
    y = jax.random.randint(jax.random.PRNGKey(1), (x.shape[0],), 0, 10)
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    objective = nmelab.Objective(
        lambda p, inputs: model.apply({"params": p}, inputs), "cross_entropy"
    )
    batch = (x, y)
    v = jax.tree.map(jnp.ones_like, params)

    grad = jax.jit(jax.grad(lambda p, b: objective.value(p, b)))
    products = {
        "gradient": (grad, (params, batch)),
        "H·v": (
            jax.jit(curvature.hessian_vector_product, static_argnums=0),
            (objective, params, batch, v),
        ),
        "GN·v": (
            jax.jit(curvature.gauss_newton_vector_product, static_argnums=0),
            (objective, params, batch, v),
        ),
        "NME·v": (
            jax.jit(curvature.nme_vector_product, static_argnums=0),
            (objective, params, batch, v),
        ),
        "joint (H,GN,NME)·v": (split_product_jit, (objective, params, batch, v)),
    }
    apply_linear = jax.jit(lambda fn, vec: fn(vec))
    for name, linearize in (
        ("H·v", linearize_hessian),
        ("GN·v", linearize_gauss_newton),
        ("NME·v", linearize_nme),
    ):
        linear = jax.jit(linearize, static_argnums=0)(objective, params, batch)
        products[f"{name} after linearize"] = (apply_linear, (linear, v))
    calls = {name: (lambda f=f, a=a: f(*a)) for name, (f, a) in products.items()}
    times = time_interleaved(calls, repeats)
    grad_bytes = peak_bytes(lambda p, b: grad(p, b), params, batch)
    rows = []
    for name, (fn, args) in products.items():
        if isinstance(args[0], nmelab.Objective):
            mem = peak_bytes(lambda *rest, fn=fn, obj=args[0]: fn(obj, *rest), *args[1:])
        else:
            mem = peak_bytes(fn, *args)
        rows.append(
            (
                name,
                f"{times[name] * 1e3:.2f}",
                f"{times[name] / times['gradient']:.2f}",
                f"{mem / grad_bytes:.2f}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
    header = ("product", "ms", "× gradient", "peak mem × gradient")
    x = jax.random.normal(jax.random.PRNGKey(2), (128, 784), jnp.float32)
    print_table("MLP 784-512-512-10, batch 128, float32", bench(MLP(), x, args.repeats), header)
    x = jax.random.normal(jax.random.PRNGKey(3), (128, 32, 32, 3), jnp.float32)
    print_table(
        "CNN 3 conv layers (32-64-64), 32×32×3, batch 128, float32",
        bench(SmallCNN(), x, args.repeats),
        header,
    )


if __name__ == "__main__":
    main()
