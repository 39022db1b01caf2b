"""Training throughput per regularizer, and the trainer's overhead over a bare jitted step.

    python benchmarks/bench_training.py [--models cnn wrn_16_4] [--repeats 5]

1. Throughput (examples/s) of the trainer's compiled step (:func:`nmelab.train.make_train_step`: in-step
   batch gather, regularizer, SGD update, divergence guard, metric sums) for plain SGD and every
   regularizer, on the small CNN (``cnn``: 3 conv layers of 32 channels, here kernel 3 and stride 2,
   so 32x32 -> 16 -> 8 -> 4, about 1 M multiply-adds per image) and WRN-16-4, with CIFAR-shaped
   synthetic data (32x32x3, 10 classes), float32. WRN-16-4 is kept short (batch 32, a few steps):
   on a 2-core CPU one step takes seconds and each regularizer compiles for a minute.
2. Overhead, split in two. (a) The trainer loop (:func:`nmelab.train.train_and_evaluate`'s
   ``timing.train_s - timing.compile_s``: step dispatch, logging, bookkeeping; no evaluation or
   checkpoints) over a Python loop of the trainer's own compiled step. Target: <= 5 %.
   (b) The trainer's step over a bare jitted SGD step on batches already on the device: the
   epochs' permutations, the in-step batch gather, divergence guard and metric sums. Both on a digits-sized MLP (the worst
   case: a 0.5 ms step) and the small CNN, with device-resident and host-fed data.

Timings are interleaved medians (benchmarks/timing.py), so machine noise hits every entry alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from timing import print_table, time_interleaved  # noqa: E402

from nmelab import losses, regularizers  # noqa: E402
from nmelab.train import (  # noqa: E402
    apply_overrides,
    build_run,
    default_config,
    init_state,
    make_train_step,
    train_and_evaluate,
)
from nmelab.train.state import zero_metrics  # noqa: E402

REGULARIZERS = {
    "none": {},
    "gradient_penalty": {"rho": 0.1, "p": 1},
    "sam": {"rho": 0.05},
    "usam": {"rho": 0.05},
    "weight_noise": {"sigma": 0.01},
    "gn_trace": {"sigma": 0.05},
    "hessian_trace": {"sigma": 0.05, "num_probes": 1},
    "nme_trace": {"sigma": 0.05, "num_probes": 1},
}


SMALL_CNN = {"strides": 2, "kernel_size": 3}
"""The small CNN's settings on 32x32 images (stride 1 and kernel 5 cost 80 M multiply-adds)."""


def make_config(
    model: str,
    shape: tuple[int, ...],
    batch: int,
    steps: int,
    steps_per_epoch: int | None = None,
    **overrides,
):
    """A synthetic-data run of ``steps`` steps with ``steps_per_epoch`` (default: one epoch)."""
    if model == "cnn" and len(shape) == 3:
        overrides.setdefault("model_kwargs", SMALL_CNN)
    steps_per_epoch = steps_per_epoch or steps
    return apply_overrides(
        default_config(),
        {
            "dataset": "synthetic",
            "dataset_kwargs": {
                "shape": shape,
                "num_train": batch * steps_per_epoch,
                "num_test": batch,
            },
            "model": model,
            "batch_size": batch,
            "eval_batch_size": batch,
            "num_epochs": steps / steps_per_epoch,
            "eval_every_epochs": 0,
            "checkpoint_every_steps": 0,
            "final_train_eval": False,
            "progress": False,
            **overrides,
        },
    )


# ------------------------------------------------------------------------------------------------
# 1. throughput per regularizer


def throughput(model: str, batch: int, steps: int, repeats: int, names: list[str]):
    config = make_config(model, (32, 32, 3), batch, steps)
    run = build_run(config)
    step_fn = make_train_step(run)
    fns = {}
    for name in names:
        reg = regularizers.get(name, **REGULARIZERS[name])
        holder = {"state": init_state(run), "acc": zero_metrics(1)}
        description = next(run.source.train_batches(jnp.array(holder["state"].data_key), 0))

        def fn(reg=reg, holder=holder, description=description):
            for _ in range(steps):
                holder["state"], holder["acc"] = step_fn(
                    holder["state"], holder["acc"], reg, run.source.arrays, description
                )
            return holder["state"].step

        fns[name] = fn
    tic = time.perf_counter()
    times = time_interleaved(fns, repeats=repeats)
    rows = []
    for name in names:
        rate = batch * steps / times[name]
        rows.append(
            (
                name,
                f"{rate:,.0f}",
                f"{times[name] / steps * 1e3:.1f}",
                f"{times[name] / times['none']:.2f}",
            )
        )
    print_table(
        f"{model}: batch {batch}, {steps} steps per timing, CIFAR-shaped synthetic data "
        f"(measured in {time.perf_counter() - tic:.0f} s incl. compilation)",
        rows,
        ("regularizer", "examples/s", "ms/step", "cost / SGD"),
    )


# ------------------------------------------------------------------------------------------------
# 2. trainer overhead


def bare_step_loop(
    model_name: str, shape: tuple[int, ...], batch: int, steps: int, steps_per_epoch: int
):
    """A Python loop over a bare jitted SGD-with-momentum step on pre-made device batches."""
    config = make_config(model_name, shape, batch, steps, steps_per_epoch)
    run = build_run(config)
    model, tx, loss_fn = run.model, run.tx, losses.get(run.loss)
    params = init_state(run).seed(0).params
    opt_state = tx.init(params)
    x = np.asarray(run.source.dataset.x_train)
    y = np.asarray(run.source.dataset.y_train)
    starts = [(i % steps_per_epoch) * batch for i in range(steps)]
    batches = [(jnp.asarray(x[i : i + batch]), jnp.asarray(y[i : i + batch])) for i in starts]

    @jax.jit
    def step(params, opt_state, xb, yb):
        def loss(p):
            return loss_fn(model.apply({"params": p}, xb, train=True), yb)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    holder = {"params": params, "opt_state": opt_state}

    def loop():
        p, o = holder["params"], holder["opt_state"]
        for xb, yb in batches:
            p, o, _ = step(p, o, xb, yb)
        holder["params"], holder["opt_state"] = p, o
        return p

    return loop, config


def trainer_step_loop(config, steps: int):
    """A Python loop over the trainer's own compiled step (device data) for one epoch, with the
    epoch's permutations, without the rest of the trainer."""
    run = build_run(config)
    step_fn = make_train_step(run)
    holder = {"state": init_state(run), "acc": zero_metrics(config.num_seeds)}

    def loop():
        state, acc = holder["state"], holder["acc"]
        batches = run.source.train_batches(jnp.array(state.data_key), 0)  # as the trainer
        for _ in range(steps):
            state, acc = step_fn(state, acc, run.regularizer, run.source.arrays, next(batches))
        holder["state"], holder["acc"] = state, acc
        return state.step

    return loop


def overhead(
    model: str, shape: tuple[int, ...], batch: int, steps: int, steps_per_epoch: int, repeats: int
):
    """Bare step loop vs the trainer's step loop vs the whole trainer, interleaved medians."""
    bare, config = bare_step_loop(model, shape, batch, steps, steps_per_epoch)
    log_every = max(1, steps // 4)
    configs = {
        "device": apply_overrides(config, {"log_every_steps": log_every}),
        "host": apply_overrides(config, {"log_every_steps": log_every, "data_on_device": False}),
    }
    step_loop = trainer_step_loop(configs["device"], steps)
    root = tempfile.mkdtemp(prefix="bench_training_")
    counter = iter(range(10**6))
    for fn in (bare, step_loop):
        jax.block_until_ready(fn())
    samples = {"bare": [], "step loop": [], **{k: [] for k in configs}}
    for name, cfg in configs.items():  # warm-up: compile the programs once
        train_and_evaluate(cfg, os.path.join(root, f"warm_{name}"))
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("step loop", step_loop)):
            tic = time.perf_counter()
            jax.block_until_ready(fn())
            samples[name].append(time.perf_counter() - tic)
        for name, cfg in configs.items():
            summary = train_and_evaluate(cfg, os.path.join(root, f"{name}_{next(counter)}"))
            timing = summary["timing"]
            samples[name].append(timing["train_s"] - timing["compile_s"])
    med = {k: statistics.median(v) for k, v in samples.items()}
    best = {k: min(v) for k, v in samples.items()}

    def row(label, name, base, base_name):
        return (
            label,
            f"{med[name] * 1e3:.1f}",
            f"{best[name] * 1e3:.1f}",
            f"{(med[name] / med[base] - 1) * 100:+.1f} %",
            f"{(best[name] / best[base] - 1) * 100:+.1f} %",
            base_name,
        )

    rows = [
        ("bare jitted SGD step, Python loop", f"{med['bare'] * 1e3:.1f}",
         f"{best['bare'] * 1e3:.1f}", "-", "-", ""),
        row("trainer's step + permutations", "step loop", "bare", "over the bare step"),
        row("trainer, device data (train_s)", "device", "step loop", "over its step loop"),
        row("trainer, host data (train_s)", "host", "step loop", "over the device step loop"),
        row("trainer, device data (train_s)", "device", "bare", "over the bare step"),
    ]  # fmt: skip
    print_table(
        f"trainer overhead: {model} on {shape} inputs, batch {batch}, {steps} steps "
        f"({steps_per_epoch} per epoch), "
        f"log every {log_every}; train_s excludes compilation, evaluation and checkpoints; "
        f"medians of {repeats}",
        rows,
        ("loop", "median ms", "min ms", "median", "min", "overhead"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "wrn_16_4"])
    parser.add_argument("--regularizers", nargs="+", default=list(REGULARIZERS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cnn-steps", type=int, default=10)
    parser.add_argument("--wrn-steps", type=int, default=2)
    parser.add_argument("--wrn-batch", type=int, default=32)
    parser.add_argument("--overhead-steps", type=int, default=200)
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs")
    names = ["none"] + [n for n in args.regularizers if n != "none"]
    for model in [] if args.skip_throughput else args.models:
        if model.startswith("wrn"):
            throughput(model, args.wrn_batch, args.wrn_steps, max(1, args.repeats // 2), names)
        else:
            throughput(model, 128, args.cnn_steps, args.repeats, names)
    if not args.skip_overhead:
        # digits-sized epochs (11 steps of 128) and CIFAR-batch CNN steps
        overhead("mlp", (64,), 128, args.overhead_steps, 11, args.repeats)
        overhead("cnn", (32, 32, 3), 32, args.overhead_steps // 2, 25, args.repeats)


if __name__ == "__main__":
    main()
