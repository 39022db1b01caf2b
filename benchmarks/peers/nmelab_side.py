"""nmelab on the workloads of ``workloads.py``; prints JSON (ms per operation).

Every function is jitted (or nmelab's own jitted estimator), warmed up once, then timed round-robin
with ``block_until_ready`` and the median reported. The Lanczos compile time is the first call's
time minus the median.
"""

from __future__ import annotations

import json
import sys
import time

import flax.linen as nn
import jax
import workloads as wl

import nmelab
from nmelab.curvature.gauss_newton import gauss_newton_vector_product
from nmelab.curvature.hessian import hessian_vector_product
from nmelab.curvature.nme import nme_vector_product

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from timing import time_interleaved  # noqa: E402


class MLP(nn.Module):
    sizes: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for width in self.sizes[1:-1]:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.sizes[-1])(x)


class SmallCNN(nn.Module):
    channels: tuple[int, ...]
    hidden: int
    classes: int

    @nn.compact
    def __call__(self, x):
        for width in self.channels:
            x = nn.relu(nn.Conv(width, (3, 3), padding="SAME")(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.classes)(x)


def problem(name: str):
    keys = jax.random.split(jax.random.key(0), 3)
    if name == "mlp":
        sizes, batch = wl.MLP["sizes"], wl.MLP["batch"]
        model = MLP(sizes)
        x = jax.random.normal(keys[0], (batch, sizes[0]))
        classes = sizes[-1]
    else:
        c = wl.CNN
        model = SmallCNN(c["channels"], c["hidden"], c["classes"])
        x = jax.random.normal(keys[0], (c["batch"], *c["image"]))
        classes, batch = c["classes"], c["batch"]
    y = jax.random.randint(keys[1], (batch,), 0, classes)
    params = model.init(keys[2], x[:1])
    return nmelab.Objective(model.apply, "cross_entropy"), params, (x, y)


def measure(name: str, repeats: int) -> dict[str, float]:
    objective, params, batch = problem(name)
    op = nmelab.hessian(objective, params, batch)
    v = nmelab.estimators.sample_probe(jax.random.key(1), params, "gaussian")
    key = jax.random.key(2)
    grad = jax.jit(jax.grad(objective.value))
    products = {
        "hvp": hessian_vector_product,
        "gnvp": gauss_newton_vector_product,
        "nmevp": nme_vector_product,
    }
    jitted = {k: jax.jit(f, static_argnums=0) for k, f in products.items()}
    lin = op.linearize()
    reuse = jax.jit(lambda lin, v: lin.mv(v))

    def lanczos():
        return nmelab.eigenpairs(op, 1, "largest", key, num_iters=wl.NUM_ITERS).eigenvalues

    start = time.perf_counter()
    jax.block_until_ready(lanczos())
    first = time.perf_counter() - start
    fns = {
        "gradient": lambda: grad(params, batch),
        **{k: (lambda f=f: f(objective, params, batch, v)) for k, f in jitted.items()},
        "hvp_reuse": lambda: reuse(lin, v),
        "trace": lambda: nmelab.trace(op, key, wl.NUM_PROBES).value,
        "top_eigenvalue": lanczos,
    }
    if name == "cnn":
        del fns["gnvp"], fns["nmevp"]
    ms = {k: 1e3 * t for k, t in time_interleaved(fns, repeats).items()}
    ms["lanczos_compile"] = 1e3 * first - ms["top_eigenvalue"]
    return ms


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    out = {
        "versions": {"jax": jax.__version__, "flax": __import__("flax").__version__},
        "mlp": measure("mlp", repeats),
        "cnn": measure("cnn", repeats),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
