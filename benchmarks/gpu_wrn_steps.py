"""One train step of every regularizer on WRN-28-10 and ResNet-50 (paper recipes), plus curvature.

    python benchmarks/gpu_wrn_steps.py             # one H200: WRN-28-10 (batch 128), ResNet-50 (256)
    python benchmarks/gpu_wrn_steps.py --smoke     # CPU check: wrn_tiny and resnet_tiny, 2 steps
    python benchmarks/gpu_wrn_steps.py --dtype bfloat16 --resnet-batch 1024

The prepared script for the ``device`` tool and the source of the step times in ``docs/gpu.md``.
Each model is built and optimised as its paper-scale config says (``configs/cifar10_wrn28_10.py``,
``configs/imagenet_resnet50.py``: Nesterov SGD, L2 decay with the recipe's mask, ghost BatchNorm
over 32 images for ResNet-50, SAM/USAM with the decay inside their loss), and the step is the
trainer's: train-mode BatchNorm, the regularizer's ``value_and_grad`` on a ``has_aux`` objective,
the optax update, params and optimizer state donated. Then one Lanczos call (``λ_max`` of the
Hessian, 20 iterations) and one Hutchinson call (``tr H``, 8 probes) per model, on the eval-mode
objective at the initial parameters, as the trainer's curvature tracking runs them.

It prints a table (ms per step, ratio to the plain SGD step of the same model, examples/s, compile
seconds, XLA's temporary memory) and, when ``$OUT`` is set, rewrites ``$OUT/gpu_wrn_steps.json``
after every entry, so a run cut short still leaves its results. Entries run cheapest first, the
two models interleaved, the third-order trace penalties last; programs compile ahead in
``--compile-workers`` threads while earlier entries are timed, and a time budget (``--budget``,
default 360 s) skips whatever would start after it, and an entry waits at most 40 s past it
for its compilation. ResNet-50 runs at batch 256 by default (the
recipe's 1,024 is ``--resnet-batch 1024``): ``docs/gpu.md`` scales the per-example time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"

MODELS: dict[str, dict[str, Any]] = {
    "wrn_28_10": {"config": "cifar10_wrn28_10.py", "image": 32, "classes": 10},
    "resnet50": {"config": "imagenet_resnet50.py", "image": 224, "classes": 1000},
}
"""The paper's two models and the configs that hold their recipes."""

SMOKE_MODELS: dict[str, dict[str, Any]] = {
    "wrn_28_10": {"model": "wrn_tiny", "image": 16, "classes": 10, "model_kwargs": {}},
    "resnet50": {
        "model": "resnet_tiny",
        "image": 32,
        "classes": 10,
        "model_kwargs": {"bn_batch": 4},
    },
}
"""Tiny stand-ins for ``--smoke`` (same recipes otherwise; ghost BN over 4 of the 8 examples)."""

REGULARIZERS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("none", "none", {}),
    ("sam", "sam", {"rho": 0.05}),
    ("usam", "usam", {"rho": 0.05}),
    ("weight_noise", "weight_noise", {"sigma": 0.01}),
    ("gradient_penalty", "gradient_penalty", {"rho": 0.1, "p": 1}),
    ("gn_trace", "gn_trace", {"sigma": 0.01}),
    ("nme_trace", "nme_trace", {"sigma": 0.01}),
    ("hessian_trace", "hessian_trace", {"sigma": 0.01}),
)
"""``(label, registry name, hyperparameters)``: every registered regularizer, cheapest first."""

COMPILE_GRACE_S = 40.0
"""How long past the budget an entry already started may wait for its compilation."""

CURVATURE = (("lanczos", {"num_iters": 20}), ("hutchinson", {"num_probes": 8}))
"""The two curvature calls: ``nmelab.eigenpairs`` of H and ``nmelab.trace`` of H."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU check on tiny models, 2 steps")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--regularizers", nargs="+", default=None, help="labels to run (default: all)"
    )
    parser.add_argument("--no-curvature", action="store_true", help="skip Lanczos and Hutchinson")
    parser.add_argument("--wrn-batch", type=int, default=None, help="default 128 (the recipe)")
    parser.add_argument("--resnet-batch", type=int, default=None, help="default 256 (recipe 1024)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--compile-workers", type=int, default=None, help="default 4 (smoke: 1)")
    parser.add_argument("--budget", type=float, default=360.0, help="seconds; later entries skip")
    args = parser.parse_args(argv)
    known = {label for label, _, _ in REGULARIZERS}
    args.regularizers = args.regularizers or [label for label, _, _ in REGULARIZERS]
    unknown = sorted(set(args.regularizers) - known)
    if unknown:
        parser.error(f"--regularizers: unknown label(s) {unknown}; choices: {sorted(known)}")
    args.batch = {
        "wrn_28_10": args.wrn_batch or (8 if args.smoke else 128),
        "resnet50": args.resnet_batch or (8 if args.smoke else 256),
    }
    args.steps = args.steps or (2 if args.smoke else 10)
    args.compile_workers = args.compile_workers or (1 if args.smoke else 4)
    return args


def model_setup(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The recipe of ``name`` read from its config, with the smoke stand-in if asked."""
    from nmelab.train import load_config

    config = load_config(CONFIGS / MODELS[name]["config"])
    spec = {
        "model": config.model,
        "model_kwargs": config.model_kwargs.to_dict(),
        "image": MODELS[name]["image"],
        "classes": MODELS[name]["classes"],
    }
    if args.smoke:
        spec.update(SMOKE_MODELS[name])
    spec.update(
        batch=args.batch[name],
        learning_rate=float(config.learning_rate),
        momentum=float(config.momentum),
        nesterov=bool(config.nesterov),
        weight_decay=float(config.weight_decay),
        weight_decay_mask=config.weight_decay_mask,
        sam_decay_in_loss=bool(config.sam_decay_in_loss),
    )
    return spec


def regularizer_for(name: str, hparams: dict[str, Any], spec: dict[str, Any]) -> Any:
    """The regularizer as the trainer builds it (SAM/USAM get the recipe's decay when asked)."""
    from nmelab import regularizers

    hparams = dict(hparams)
    if spec["sam_decay_in_loss"] and "weight_decay" in regularizers.hyperparameters(name):
        hparams.update(
            weight_decay=spec["weight_decay"], weight_decay_mask=spec["weight_decay_mask"]
        )
    return regularizers.get(name, **hparams)


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
                rngs={"dropout": key},
            )
            new = jax.tree.map(lambda a, b: a.astype(b.dtype), mutated["batch_stats"], stats)
            return logits.astype(jnp.float32), new

        objective = nmelab.Objective(apply_fn, "cross_entropy", has_aux=True)
        (value, new_stats), grads = reg.value_and_grad(objective, params, (x, y), key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, value

    return jax.jit(step, donate_argnums=(0, 1, 2))


def hessian_operator(model: Any, variables: Any, x: Any, y: Any) -> Any:
    """The Hessian of the eval-mode objective at ``variables``.

    Built once per model: the estimators' ``jit`` caches on the operator, so an operator rebuilt
    around a new closure would compile again on every call.
    """
    import nmelab

    stats = variables["batch_stats"]

    def apply_fn(p, inputs):
        return model.apply({"params": p, "batch_stats": stats}, inputs, train=False)

    return nmelab.hessian(nmelab.Objective(apply_fn, "cross_entropy"), variables["params"], (x, y))


def curvature_call(kind: str, hparams: dict[str, Any], op: Any, key: Any) -> Any:
    """One call of the estimator; returns the scalar to block on (λ_max or the trace)."""
    import nmelab

    if kind == "lanczos":
        return nmelab.eigenpairs(op, k=1, key=key, num_iters=hparams["num_iters"]).eigenvalues[-1]
    return nmelab.trace(op, key, hparams["num_probes"]).value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.smoke:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(HERE))
    from timing import print_table

    from nmelab import models
    from nmelab.train.optim import learning_rate_schedule, sgd

    start = time.perf_counter()
    device = jax.devices()[0]
    compute_dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    out_dir = os.environ.get("OUT")
    report: dict[str, Any] = {
        "device": str(device),
        "platform": device.platform,
        "jax": jax.__version__,
        "dtype": args.dtype,
        "steps": args.steps,
        "budget_s": args.budget,
        "models": {},
        "entries": [],
    }

    def save() -> None:
        report["elapsed_s"] = time.perf_counter() - start
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "gpu_wrn_steps.json"), "w") as f:
                json.dump(report, f, indent=1)

    setups = {}
    for name in args.models:
        spec = model_setup(name, args)
        model = models.get(spec["model"], num_classes=spec["classes"], **spec["model_kwargs"])
        kx, ky, kp = jax.random.split(jax.random.key(0), 3)
        shape = (spec["batch"], spec["image"], spec["image"], 3)
        x = jax.random.normal(kx, shape, jnp.float32)
        y = jax.random.randint(ky, (spec["batch"],), 0, spec["classes"])
        variables = jax.jit(lambda k, m=model, xs=x[:1]: m.init(k, xs, train=False))(kp)
        schedule = learning_rate_schedule(spec["learning_rate"], total_steps=1000, warmup_steps=0)
        tx = sgd(
            schedule,
            spec["momentum"],
            spec["nesterov"],
            spec["weight_decay"],
            spec["weight_decay_mask"],
        )
        setups[name] = {"spec": spec, "model": model, "x": x, "y": y, "vars": variables, "tx": tx}
        setups[name]["hessian"] = hessian_operator(model, variables, x, y)
        report["models"][name] = {**spec, "params": models.param_count(variables["params"])}
        print(
            f"{name}: {spec['model']} {spec['model_kwargs']}, batch {spec['batch']}, "
            f"{report['models'][name]['params']:,} params, {spec['image']}px",
            flush=True,
        )
    print(f"gpu_wrn_steps on {device} ({device.platform}), jax {jax.__version__}, {args.dtype}")

    # entry order: regularizers cheapest first (models interleaved), the curvature calls after the
    # first-order ones, the third-order trace penalties last
    labels = [label for label, _, _ in REGULARIZERS if label in args.regularizers]
    steps = [(m, ("step", lab)) for lab in labels for m in args.models]
    split = next(
        (i for i, (_, (_, lab)) in enumerate(steps) if lab in ("nme_trace", "hessian_trace")),
        len(steps),
    )
    curvature = [] if args.no_curvature else [(m, c) for c in CURVATURE for m in args.models]
    order = steps[:split] + [(m, ("curvature", c)) for m, c in curvature] + steps[split:]

    def compile_entry(model_name: str, label: str) -> tuple[Any, float, int | None]:
        tic = time.perf_counter()
        s = setups[model_name]
        _, name, hparams = next(r for r in REGULARIZERS if r[0] == label)
        reg = regularizer_for(name, hparams, s["spec"])
        step = build_step(s["model"], reg, s["tx"], compute_dtype)
        shapes = jax.eval_shape(
            lambda v: (v["params"], v["batch_stats"], s["tx"].init(v["params"])), s["vars"]
        )
        lowered = step.lower(*shapes, s["x"], s["y"], jax.random.key(1))
        compiled = lowered.compile()
        memory = compiled.memory_analysis()
        temp = None if memory is None else int(memory.temp_size_in_bytes)
        return compiled, time.perf_counter() - tic, temp

    pool = concurrent.futures.ThreadPoolExecutor(args.compile_workers)
    futures = {
        (m, what[1]): pool.submit(compile_entry, m, what[1])
        for m, what in order
        if what[0] == "step"
    }
    baseline: dict[str, float] = {}
    for model_name, (kind, item) in order:
        s = setups[model_name]
        label = item if kind == "step" else item[0]
        entry: dict[str, Any] = {"model": model_name, "kind": kind, "name": label}
        elapsed = time.perf_counter() - start
        if elapsed > args.budget:
            entry["skipped"] = f"time budget: {elapsed:.0f} s used of {args.budget:.0f} s"
            if kind == "step":
                futures[(model_name, item)].cancel()
            report["entries"].append(entry)
            save()
            continue
        try:
            if kind == "step":
                wait = max(1.0, args.budget + COMPILE_GRACE_S - elapsed)
                entry.update(run_step(futures.pop((model_name, item)), s, args.steps, wait))
                entry["hparams"] = next(r[2] for r in REGULARIZERS if r[0] == label)
                if label == "none":
                    baseline[model_name] = entry["seconds"]
                if model_name in baseline:
                    entry["ratio_to_sgd"] = entry["seconds"] / baseline[model_name]
            else:
                entry.update(run_curvature(item, s))
        except Exception as err:  # noqa: BLE001 - an OOM or compile failure is a result here
            entry["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        report["entries"].append(entry)
        save()
        print(f"  {format_entry(entry)}", flush=True)
    pool.shutdown(cancel_futures=True)

    rows = [row(e) for e in report["entries"]]
    print_table(
        f"{args.dtype}, {device.platform}",
        rows,
        ("model", "entry", "ms", "x SGD", "examples/s", "compile s", "temp GiB", "note"),
    )
    save()
    print(
        f"total {time.perf_counter() - start:.0f} s"
        + (f"; JSON in {out_dir}/gpu_wrn_steps.json" if out_dir else "")
    )
    return report


def run_step(future: Any, s: dict[str, Any], num_steps: int, wait_s: float) -> dict[str, Any]:
    """Wait (at most ``wait_s``) for a compiled step, run it once, then time ``num_steps`` steps."""
    import jax
    import jax.numpy as jnp

    compiled, compile_s, temp = future.result(timeout=wait_s)
    params = jax.tree.map(jnp.copy, s["vars"]["params"])
    stats = jax.tree.map(jnp.copy, s["vars"]["batch_stats"])
    opt_state = s["tx"].init(params)
    key = jax.random.key(1)
    params, stats, opt_state, value = compiled(params, stats, opt_state, s["x"], s["y"], key)
    jax.block_until_ready(value)
    times = []
    for i in range(num_steps):
        tic = time.perf_counter()
        params, stats, opt_state, value = compiled(
            params, stats, opt_state, s["x"], s["y"], jax.random.fold_in(key, i)
        )
        jax.block_until_ready(value)
        times.append(time.perf_counter() - tic)
    seconds = statistics.median(times)
    batch = s["spec"]["batch"]
    return {
        "seconds": seconds,
        "ms": 1e3 * seconds,
        "examples_per_s": batch / seconds,
        "compile_s": compile_s,
        "temp_bytes": temp,
        "final_value": float(value),
        "finite": bool(jnp.isfinite(value)),
    }


def run_curvature(item: tuple[str, dict[str, Any]], s: dict[str, Any]) -> dict[str, Any]:
    """Time one estimator call: the first (compile + run) and a second (run only)."""
    import jax

    kind, hparams = item
    key = jax.random.key(2)
    times = []
    for _ in range(2):
        tic = time.perf_counter()
        value = jax.block_until_ready(curvature_call(kind, hparams, s["hessian"], key))
        times.append(time.perf_counter() - tic)
    return {
        "hparams": hparams,
        "seconds": times[1],
        "ms": 1e3 * times[1],
        "compile_s": times[0] - times[1],
        "value": float(value),
        "finite": bool(jax.numpy.isfinite(value)),
    }


def format_entry(e: dict[str, Any]) -> str:
    if "error" in e:
        return f"{e['model']:10s} {e['name']:17s} ERROR {e['error']}"
    return f"{e['model']:10s} {e['name']:17s} {e['ms']:10.2f} ms  compile {e['compile_s']:6.1f} s"


def row(e: dict[str, Any]) -> tuple[str, ...]:
    if "skipped" in e or "error" in e:
        return (e["model"], e["name"], "-", "-", "-", "-", "-", e.get("skipped") or e["error"])
    return (
        e["model"],
        e["name"],
        f"{e['ms']:.2f}",
        f"{e['ratio_to_sgd']:.2f}" if "ratio_to_sgd" in e else "-",
        f"{e['examples_per_s']:,.0f}" if "examples_per_s" in e else "-",
        f"{e['compile_s']:.1f}",
        f"{e['temp_bytes'] / 2**30:.2f}" if e.get("temp_bytes") is not None else "-",
        "ok" if e["finite"] else "NON-FINITE",
    )


if __name__ == "__main__":
    main()
