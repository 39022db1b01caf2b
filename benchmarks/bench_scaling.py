"""Data-parallel scaling on 1, 2 and 4 *simulated* CPU devices: correctness and overhead only.

    python benchmarks/bench_scaling.py [--devices 1 2 4] [--batch 512] [--repeats 10]

Each device count runs in its own subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``: the batch is ``shard_batch``-ed over a
``make_mesh()`` mesh, the params replicated, and the *same* jitted functions are timed - an SGD
step (``none``), a SAM step, and a 8-probe ``trace_split`` - on an MLP 40-256-256-10 (MNIST-1D
shapes). Printed: examples per second, the ratio to one device, and the largest relative
difference of the results from the one-device run (float32 rounding, ~1e-7).

Caveat: simulated devices are threads of one process sharing the same CPU cores (2 here), so the
ratio measures the *overhead* of partitioning (collectives, per-device dispatch), not a speed-up;
a ratio above 1 only means one simulated device left a core idle. On real accelerators each
device brings its own compute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CAVEAT = (
    "simulated CPU devices share the same {cores} cores: ratios show partitioning overhead "
    "and correctness, not accelerator speed-up (a ratio above 1 only means that one simulated "
    "device left cores idle)"
)


def worker(num_devices: int, batch_size: int, repeats: int) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    sys.path.insert(0, HERE)
    import jax
    import jax.numpy as jnp
    from timing import time_interleaved

    import nmelab
    import nmelab.parallel as par
    from nmelab import models, regularizers

    assert jax.device_count() == num_devices
    mesh = par.make_mesh()
    model = models.get("mlp", num_classes=10, activation="gelu")
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (batch_size, 40))
    y = jax.random.randint(ky, (batch_size,), 0, 10)
    params = model.init(kp, x[:1], train=False)["params"]
    objective = nmelab.Objective(lambda p, inputs: model.apply({"params": p}, inputs, train=True))
    batch = par.shard_batch((x, y), mesh)
    params = par.replicate(params, mesh)
    key = jax.random.PRNGKey(1)

    def stepper(reg):
        @jax.jit
        def step(params, batch, key):
            value, grads = reg.value_and_grad(objective, params, batch, key)
            return value, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

        return step

    sgd = stepper(regularizers.get("none"))
    sam = stepper(regularizers.get("sam", rho=0.05))

    def split(params, batch, key):
        t = nmelab.trace_split(objective, params, batch, key, 8)
        return jnp.stack([t.hessian.value, t.gauss_newton.value, t.nme.value])

    fns = {
        "sgd step": lambda: sgd(params, batch, key),
        "sam step": lambda: sam(params, batch, key),
        "trace_split(8)": lambda: split(params, batch, key),
    }
    times = time_interleaved(fns, repeats)
    outputs = {
        name: [float(v) for v in jax.tree.leaves(jax.tree.map(lambda a: jnp.sum(jnp.abs(a)), fn()))]
        for name, fn in fns.items()
    }
    print(json.dumps({"devices": num_devices, "seconds": times, "outputs": outputs}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.batch, args.repeats)
        return
    sys.path.insert(0, HERE)
    from timing import print_table

    caveat = CAVEAT.format(cores=os.cpu_count())
    print(f"bench_scaling: MLP 40-256-256-10, global batch {args.batch}, float32. NOTE: {caveat}.")
    runs = []
    for num in args.devices:
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                str(num),
                "--batch",
                str(args.batch),
                "--repeats",
                str(args.repeats),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            sys.exit(f"worker with {num} devices failed:\n{proc.stderr[-4000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = runs[0]
    rows = []
    for run in runs:
        for name, seconds in run["seconds"].items():
            ref, got = base["outputs"][name], run["outputs"][name]
            diff = max(abs(a - b) / max(abs(a), 1e-30) for a, b in zip(ref, got, strict=True))
            rows.append(
                (
                    str(run["devices"]),
                    name,
                    f"{args.batch / seconds:,.0f}",
                    f"{base['seconds'][name] / seconds:.2f}",
                    f"{diff:.1e}",
                )
            )
    print_table(
        f"examples/s (ratio: speed relative to {base['devices']} device(s); "
        "diff: max relative difference of the results)",
        rows,
        ("devices", "workload", "examples/s", "ratio", "diff"),
    )
    print(json.dumps({"caveat": caveat, "batch": args.batch, "runs": runs}))


if __name__ == "__main__":
    main()
