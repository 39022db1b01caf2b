"""Train-step time of every regularizer on WRN-16-4 and WRN-28-10 (CIFAR shapes), one GPU.

    python benchmarks/gpu_wrn_steps.py                     # H200: WRN-16-4 and WRN-28-10, batch 128
    python benchmarks/gpu_wrn_steps.py --dtype bfloat16    # bf16 compute, float32 master weights
    python benchmarks/gpu_wrn_steps.py --smoke             # CPU check: tiny WRN, 16x16, 2 steps

One prepared script for the ``device`` tool: it prints a table (ms per step, ratio to the plain
SGD step, examples/s, compile seconds, XLA's temporary memory) and, when ``$OUT`` is set, writes
``$OUT/gpu_wrn_steps.json`` after every entry, so a run cut short still leaves its results. A time
budget (``--budget``, default 540 s) skips the remaining entries once the projected time would
pass it; WRN-16-4 runs first and the third-order trace penalties of WRN-28-10 last.

The step is the trainer's: train-mode BatchNorm (global batch statistics), the regularizer's
``value_and_grad`` on a ``has_aux`` objective, SGD with momentum 0.9 (optax), params and optimizer
state donated. Each regularizer gets its own ``jax.jit``, so every entry times exactly its own
program (and nothing relies on the jit cache telling regularizer classes apart).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

REGULARIZERS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("none", "none", {}),
    ("sam", "sam", {"rho": 0.05}),
    ("usam", "usam", {"rho": 0.05}),
    ("gradient_penalty", "gradient_penalty", {"rho": 0.05, "p": 1}),
    ("weight_noise", "weight_noise", {"sigma": 0.01}),
    ("gn_trace", "gn_trace", {"sigma": 0.01}),
    ("nme_trace", "nme_trace", {"sigma": 0.01}),
    ("hessian_trace", "hessian_trace", {"sigma": 0.01}),
)
"""``(label, registry name, hyperparameters)``, cheapest first (the budget cuts the tail)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="CPU check: wrn_tiny on 16x16x3, batch 8, 2 steps"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="model names (default wrn_16_4 wrn_28_10; smoke: wrn_tiny)",
    )
    parser.add_argument(
        "--regularizers", nargs="+", default=None, help="labels to run (default: all)"
    )
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 128)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype (master weights and BN statistics stay float32)",
    )
    parser.add_argument(
        "--budget", type=float, default=540.0, help="seconds; skip remaining entries past it"
    )
    args = parser.parse_args(argv)
    if args.models is None:
        args.models = ["wrn_tiny"] if args.smoke else ["wrn_16_4", "wrn_28_10"]
    args.batch = args.batch or (8 if args.smoke else 128)
    args.steps = args.steps or (2 if args.smoke else 10)
    args.image = 16 if args.smoke else 32
    known = {label for label, _, _ in REGULARIZERS}
    args.regularizers = args.regularizers or [label for label, _, _ in REGULARIZERS]
    unknown = sorted(set(args.regularizers) - known)
    if unknown:
        parser.error(f"unknown regularizer label(s) {unknown}; choices: {sorted(known)}")
    return args


def build_step(model: Any, reg: Any, tx: Any, compute_dtype: Any) -> Any:
    import jax
    import jax.numpy as jnp
    import optax

    import nmelab

    def step(params, stats, opt_state, x, y, key):
        def apply_fn(p, inputs):
            p = jax.tree.map(lambda a: a.astype(compute_dtype), p)
            logits, mutated = model.apply(
                {"params": p, "batch_stats": stats},
                inputs.astype(compute_dtype),
                train=True,
                mutable=["batch_stats"],
            )
            new = jax.tree.map(lambda a, b: a.astype(b.dtype), mutated["batch_stats"], stats)
            return logits.astype(jnp.float32), new

        objective = nmelab.Objective(apply_fn, "cross_entropy", has_aux=True)
        (value, new_stats), grads = reg.value_and_grad(objective, params, (x, y), key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, value

    return jax.jit(step, donate_argnums=(0, 1, 2))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.smoke:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import optax

    sys.path.insert(0, HERE)
    from timing import print_table

    from nmelab import models, regularizers

    start = time.perf_counter()
    device = jax.devices()[0]
    compute_dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    out_dir = os.environ.get("OUT")
    report: dict[str, Any] = {
        "device": str(device),
        "platform": device.platform,
        "jax": jax.__version__,
        "batch": args.batch,
        "dtype": args.dtype,
        "image": args.image,
        "steps": args.steps,
        "entries": [],
    }
    print(
        f"gpu_wrn_steps on {device} ({device.platform}), jax {jax.__version__}, batch "
        f"{args.batch}, {args.dtype}, {args.image}x{args.image}x3, {args.steps} timed steps"
    )

    def save() -> None:
        report["elapsed_s"] = time.perf_counter() - start
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "gpu_wrn_steps.json"), "w") as f:
                json.dump(report, f, indent=1)

    tx = optax.sgd(0.1, momentum=0.9)
    kx, ky, kp = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(kx, (args.batch, args.image, args.image, 3), jnp.float32)
    y = jax.random.randint(ky, (args.batch,), 0, 10)
    last_cost = 0.0
    for model_name in args.models:
        model = models.get(model_name, num_classes=10)
        variables = jax.jit(lambda k, m=model: m.init(k, x[:1], train=False))(kp)
        num_params = models.param_count(variables["params"])
        baseline = None
        for label, name, hparams in REGULARIZERS:
            if label not in args.regularizers:
                continue
            entry = {
                "model": model_name,
                "params": num_params,
                "regularizer": label,
                "hparams": hparams,
            }
            elapsed = time.perf_counter() - start
            if elapsed + last_cost > args.budget:
                entry["skipped"] = f"time budget: {elapsed:.0f} s used of {args.budget:.0f} s"
                report["entries"].append(entry)
                save()
                continue
            tic = time.perf_counter()
            reg = regularizers.get(name, **hparams)
            step = build_step(model, reg, tx, compute_dtype)
            params = jax.tree.map(jnp.copy, variables["params"])
            stats = jax.tree.map(jnp.copy, variables["batch_stats"])
            opt_state = tx.init(params)
            key = jax.random.PRNGKey(1)
            compiled = step.lower(params, stats, opt_state, x, y, key).compile()
            entry["compile_s"] = time.perf_counter() - tic
            memory = compiled.memory_analysis()
            if memory is not None:
                entry["temp_bytes"] = int(memory.temp_size_in_bytes)
            params, stats, opt_state, value = compiled(params, stats, opt_state, x, y, key)
            jax.block_until_ready(value)
            times = []
            for i in range(args.steps):
                t0 = time.perf_counter()
                params, stats, opt_state, value = compiled(
                    params, stats, opt_state, x, y, jax.random.fold_in(key, i)
                )
                jax.block_until_ready(value)
                times.append(time.perf_counter() - t0)
            seconds = statistics.median(times)
            entry.update(
                ms_per_step=1e3 * seconds,
                examples_per_s=args.batch / seconds,
                final_value=float(value),
                finite=bool(jnp.isfinite(value)),
            )
            if label == "none":
                baseline = seconds
            if baseline:
                entry["ratio_to_sgd"] = seconds / baseline
            last_cost = time.perf_counter() - tic
            report["entries"].append(entry)
            save()
            print(
                f"  {model_name:10s} {label:17s} {1e3 * seconds:9.2f} ms/step  "
                f"compile {entry['compile_s']:6.1f} s",
                flush=True,
            )
            del params, stats, opt_state, compiled, step

    rows = []
    for e in report["entries"]:
        if "skipped" in e:
            rows.append((e["model"], e["regularizer"], "-", "-", "-", "-", "-", e["skipped"]))
            continue
        rows.append(
            (
                e["model"],
                e["regularizer"],
                f"{e['ms_per_step']:.2f}",
                f"{e['ratio_to_sgd']:.2f}" if "ratio_to_sgd" in e else "-",
                f"{e['examples_per_s']:,.0f}",
                f"{e['compile_s']:.1f}",
                f"{e.get('temp_bytes', 0) / 2**30:.2f}",
                "ok" if e["finite"] else "NON-FINITE",
            )
        )
    print_table(
        f"train step, batch {args.batch}, {args.dtype}, {device.platform}",
        rows,
        ("model", "regularizer", "ms/step", "x SGD", "examples/s", "compile s", "temp GiB", "note"),
    )
    save()
    print(
        f"total {time.perf_counter() - start:.0f} s"
        + (f"; JSON in {out_dir}/gpu_wrn_steps.json" if out_dir else "")
    )
    return report


if __name__ == "__main__":
    main()
