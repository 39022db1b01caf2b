"""The PyTorch peers (curvlinops, PyHessian) on the workloads of ``workloads.py``; prints JSON.

Run by ``run.py`` inside the peers' own virtual environment (torch, CPU build). Every function is
run once to warm up, then the functions are timed round-robin and the median reported, in ms.

PyHessian 0.1 needs ``cuda=False`` and stops its power iteration and trace early unless
``tol=-inf``, so both run exactly the requested number of products here.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time

import torch
import workloads as wl
from torch import nn


def mlp_model():
    sizes = wl.MLP["sizes"]
    layers = []
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(m, n))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    x = torch.randn(wl.MLP["batch"], sizes[0])
    y = torch.randint(0, sizes[-1], (wl.MLP["batch"],))
    return model, x, y


def cnn_model():
    c = wl.CNN
    h, w, ch = c["image"]
    c1, c2 = c["channels"]
    model = nn.Sequential(
        nn.Conv2d(ch, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (h // 4) * (w // 4), c["hidden"]),
        nn.ReLU(),
        nn.Linear(c["hidden"], c["classes"]),
    )
    x = torch.randn(c["batch"], ch, h, w)
    y = torch.randint(0, c["classes"], (c["batch"],))
    return model, x, y


def time_round_robin(fns, repeats):
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(ts) for name, ts in samples.items()}


def measure(model, x, y, mlp: bool, repeats: int):
    from curvlinops import GGNLinearOperator, HessianLinearOperator
    from curvlinops.trace.hutchinson import hutchinson_trace
    from pyhessian import hessian as pyhessian
    from pyhessian.utils import hessian_vector_product

    loss_fn = nn.CrossEntropyLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    v = [torch.randn_like(p) for p in params]

    def gradient():
        return torch.autograd.grad(loss_fn(model(x), y), params)

    data = [(x, y)]
    hess = HessianLinearOperator(model, loss_fn, params, data, check_deterministic=False)
    ggn = GGNLinearOperator(model, loss_fn, params, data, check_deterministic=False)

    def power(matvec):
        u = [torch.randn_like(p) for p in params]
        value = 0.0
        for _ in range(wl.NUM_ITERS):
            norm = math.sqrt(sum(float((t * t).sum()) for t in u))
            u = [t / norm for t in u]
            hu = matvec(u)
            value = sum(float((a * b).sum()) for a, b in zip(u, hu, strict=True))
            u = hu
        return value

    def pyhessian_object():
        return pyhessian(model, loss_fn, data=(x, y), cuda=False)

    reused = pyhessian_object()

    curvlinops = {
        "hvp": lambda: hess @ v,
        "trace": lambda: hutchinson_trace(hess, wl.NUM_PROBES),
        "top_eigenvalue": lambda: power(lambda u: hess @ u),
    }
    if mlp:
        curvlinops["gnvp"] = lambda: ggn @ v
        curvlinops["nmevp"] = lambda: [a - b for a, b in zip(hess @ v, ggn @ v, strict=True)]
    peers = {
        "gradient": ("torch", gradient),
        **{f"curvlinops/{k}": ("curvlinops", f) for k, f in curvlinops.items()},
        "pyhessian/hvp": (
            "PyHessian",
            lambda: hessian_vector_product(pyhessian_object().gradsH, params, v),
        ),
        "pyhessian/hvp_reuse": (
            "PyHessian",
            lambda: hessian_vector_product(reused.gradsH, params, v),
        ),
        "pyhessian/trace": (
            "PyHessian",
            lambda: pyhessian_object().trace(maxIter=wl.NUM_PROBES, tol=float("-inf")),
        ),
        "pyhessian/top_eigenvalue": (
            "PyHessian",
            lambda: pyhessian_object().eigenvalues(
                maxIter=wl.NUM_ITERS, tol=float("-inf"), top_n=1
            ),
        ),
    }
    return time_round_robin({k: f for k, (_, f) in peers.items()}, repeats)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    if "NMELAB_BENCH_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["NMELAB_BENCH_THREADS"]))
    torch.manual_seed(0)
    from importlib.metadata import version

    out = {
        "versions": {
            "torch": torch.__version__,
            "curvlinops-for-pytorch": version("curvlinops-for-pytorch"),
            "pyhessian": version("pyhessian"),
            "threads": torch.get_num_threads(),
        },
        "mlp": measure(*mlp_model(), mlp=True, repeats=repeats),
        "cnn": measure(*cnn_model(), mlp=False, repeats=repeats),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
