"""Sharded-versus-single-device checks, run in a subprocess with simulated CPU devices.

Usage: ``python _parallel_checks.py SECTION [--devices 4]`` with SECTION one of :data:`SECTIONS`
(``curvature``, ``regularizers``, ``msharpness`` and their ``*_slow`` extensions). ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` is set
here, before jax is imported, so the calling test process keeps its single device. The last line
of stdout is a JSON object ``{check_name: {"err": float, "tol": float, "ok": bool, ...}}``; a
check with ``"expect": "differ"`` passes when ``err > tol`` (the m-sharpness and naive-shard_map
checks that prove the comparisons can fail).

Everything runs in float32 (x64 off): the claim is agreement "to float32 tolerance". Errors are
relative to the largest entry of the single-device result: ``max|a - b| / max|a|``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _setup_devices(num: int) -> None:
    """Simulate ``num`` CPU devices; compile with LLVM optimisation off (about 40 % faster
    compiles; the single-device and sharded programs compared are compiled alike)."""
    flags = os.environ.get("XLA_FLAGS", "")
    keep = [f for f in flags.split() if "xla_force_host_platform_device_count" not in f]
    if not any("xla_backend_optimization_level" in f for f in keep):
        keep.append("--xla_backend_optimization_level=0")
    keep.append(f"--xla_force_host_platform_device_count={num}")
    os.environ["XLA_FLAGS"] = " ".join(keep)
    os.environ["JAX_PLATFORMS"] = "cpu"


SECTIONS = (
    "curvature",
    "curvature_slow",
    "regularizers",
    "regularizers_slow",
    "msharpness",
    "msharpness_slow",
)

# float32 agreement: sums over the batch are reordered across devices, nothing else changes.
RTOL = 2e-5
# Lanczos amplifies rounding over its iterations (still far below any real difference).
RTOL_LANCZOS = 5e-4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("section", choices=SECTIONS)
    parser.add_argument("--devices", type=int, default=4)
    args = parser.parse_args()
    _setup_devices(args.devices)

    import jax

    jax.config.update("jax_enable_x64", False)
    tic = time.perf_counter()
    results: dict[str, dict] = {}
    checks = Checks(results, args.devices)
    getattr(checks, args.section)()
    results["_meta"] = {
        "ok": True,
        "err": 0.0,
        "tol": 0.0,
        "seconds": time.perf_counter() - tic,
        "devices": jax.device_count(),
    }
    print(json.dumps(results))
    sys.stdout.flush()


class Checks:
    def __init__(self, results: dict, num_devices: int):
        import jax
        import jax.numpy as jnp

        import nmelab
        import nmelab.parallel as par

        self.results = results
        self.last = time.perf_counter()
        self.jax, self.jnp, self.nmelab, self.par = jax, jnp, nmelab, par
        if jax.device_count() != num_devices:
            raise RuntimeError(f"expected {num_devices} devices, got {jax.device_count()}")
        self.mesh = par.make_mesh()
        self.num = num_devices
        self.key = jax.random.PRNGKey(42)
        self.objective, self.params, self.batch = self.mlp_problem()
        self.sbatch = par.shard_batch(self.batch, self.mesh)
        self.rparams = par.replicate(self.params, self.mesh)
        assert self.sbatch[0].sharding.spec == jax.sharding.PartitionSpec("data")
        assert len(self.sbatch[0].sharding.device_set) == num_devices
        assert len(self.sbatch[0].addressable_shards) == num_devices

    # ------------------------------------------------------------------------------------
    # problems

    def mlp_problem(self, num: int = 16, sizes=(6, 12, 3), seed: int = 0):
        jax, jnp = self.jax, self.jnp
        keys = jax.random.split(jax.random.PRNGKey(seed), len(sizes) + 1)
        params = [
            {
                "w": jax.random.normal(k, (m, n)) / jnp.sqrt(m),
                "b": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (n,)),
            }
            for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=False)
        ]

        def apply_fn(params, x):
            h = x
            for layer in params[:-1]:
                h = jax.nn.gelu(h @ layer["w"] + layer["b"], approximate=False)
            return h @ params[-1]["w"] + params[-1]["b"]

        x = jax.random.normal(keys[-2], (num, sizes[0]))
        y = jax.random.randint(keys[-1], (num,), 0, sizes[-1])
        return self.nmelab.Objective(apply_fn, "cross_entropy"), params, (x, y)

    def bn_problem(self, num: int = 16, conv: bool = False):
        """A flax model with BatchNorm in train mode; ``has_aux`` returns the new batch_stats.

        ``conv``: nmelab's ``cnn_bn_tiny`` on 1-D signals; otherwise a Dense-BN-GELU-Dense MLP
        (cheaper to compile, same BatchNorm).
        """
        import flax.linen as nn

        jax = self.jax
        from nmelab import models

        class BNMLP(nn.Module):
            @nn.compact
            def __call__(self, x, train: bool):
                x = nn.Dense(8)(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
                return nn.Dense(3)(jax.nn.gelu(x, approximate=False))

        kx, ky, kp = jax.random.split(jax.random.PRNGKey(7), 3)
        if conv:
            model = models.get("cnn_bn_tiny", num_classes=3, activation="gelu")
            x = jax.random.normal(kx, (num, 10, 2))
        else:
            model = BNMLP()
            x = jax.random.normal(kx, (num, 6))
        y = jax.random.randint(ky, (num,), 0, 3)
        variables = model.init(kp, x[:2], train=False)
        stats = variables["batch_stats"]

        def apply_fn(params, x):
            logits, mutated = model.apply(
                {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            return logits, mutated["batch_stats"]

        objective = self.nmelab.Objective(apply_fn, "cross_entropy", has_aux=True)
        return objective, variables["params"], (x, y)

    # ------------------------------------------------------------------------------------
    # comparison

    def err(self, a, b) -> float:
        import numpy as np

        la = [np.asarray(x, dtype=np.float64) for x in self.jax.tree.leaves(a)]
        lb = [np.asarray(x, dtype=np.float64) for x in self.jax.tree.leaves(b)]
        if len(la) != len(lb) or any(x.shape != y.shape for x, y in zip(la, lb, strict=True)):
            return float("inf")
        scale = max(max((float(np.max(np.abs(x))) for x in la if x.size), default=0.0), 1e-30)
        diff = max(
            (float(np.max(np.abs(x - y))) for x, y in zip(la, lb, strict=True) if x.size),
            default=0.0,
        )
        return diff / scale

    def record(self, name: str, a, b, tol: float = RTOL, expect: str = "equal") -> None:
        e = self.err(a, b)
        ok = e <= tol if expect == "equal" else e > tol
        now = time.perf_counter()
        self.results[name] = {
            "err": e,
            "tol": tol,
            "ok": bool(ok),
            "expect": expect,
            "seconds": now - self.last,
        }
        self.last = now

    def both(self, name: str, fn, tol: float = RTOL, fsdp: bool = False) -> None:
        """``fn(params, batch)`` on one device versus on the sharded batch (replicated params)."""
        single = fn(self.params, self.batch)
        sharded = fn(self.rparams, self.sbatch)
        self.record(name, single, sharded, tol)
        if fsdp:
            fparams = self.par.shard_params(self.params, self.mesh)
            self.record(name + "/fsdp", single, fn(fparams, self.sbatch), tol)

    # ------------------------------------------------------------------------------------
    # section: curvature operators and estimators

    def probe_vector(self):
        jax = self.jax
        return jax.tree.map(
            lambda p: jax.random.normal(jax.random.fold_in(self.key, p.size), p.shape),
            self.params,
        )

    def curvature(self) -> None:
        """Default run: every operator and every estimator once, BatchNorm, FSDP, bad input."""
        jax, nm, obj, key = self.jax, self.nmelab, self.objective, self.key
        from nmelab.estimators import hutchinson_trace

        v = self.probe_vector()
        self.both("op/hessian", lambda p, b: nm.hessian(obj, p, b).mv(v), fsdp=True)
        self.both("op/gauss_newton", lambda p, b: nm.gauss_newton(obj, p, b).mv(v))
        self.both("op/nme", lambda p, b: nm.nme(obj, p, b).mv(v))
        self.both("op/fisher", lambda p, b: nm.fisher(obj, p, b, key, 4).mv(v))
        self.both("op/split_product", lambda p, b: nm.split_product(obj, p, b, v))
        self.both("op/linearize_split", jax.jit(lambda p, b: nm.linearize_split(obj, p, b)(v)))

        self.both(
            "est/trace_hutchinson_H", lambda p, b: hutchinson_trace(nm.hessian(obj, p, b), key, 8)
        )
        self.both("est/trace_split", lambda p, b: nm.trace_split(obj, p, b, key, 8), fsdp=True)
        self.both(
            "est/diagonal_hutchinson_H", lambda p, b: nm.diagonal(nm.hessian(obj, p, b), key, 8)
        )

        def eig(p, b):
            pairs = nm.eigenpairs(nm.hessian(obj, p, b), k=2, which="both", key=key, num_iters=24)
            return pairs.eigenvalues

        self.both("est/eigenpairs", eig, tol=RTOL_LANCZOS)

        def sld(p, b):
            d = nm.spectral_density(nm.hessian(obj, p, b), key, 3, 8)
            # the quadrature moments sum_j tau_j theta_j^k are what the density is made of
            return [d.moment(k) for k in (1, 2, 3)] + [d.nodes]

        self.both("est/spectral_density", sld, tol=RTOL_LANCZOS)
        self.both("est/gn_trace_sampled", lambda p, b: nm.gn_trace_sampled(obj, p, b, key, 4))
        self.batchnorm()
        self.bad_input()
        self.constrain()

    def curvature_slow(self) -> None:
        """The other methods and forms of the estimators, more FSDP, BatchNorm curvature."""
        jax, jnp, nm, obj, key = self.jax, self.jnp, self.nmelab, self.objective, self.key
        v = self.probe_vector()
        self.both("op/gauss_newton/fsdp", lambda p, b: nm.gauss_newton(obj, p, b).mv(v), fsdp=True)
        self.both("op/nme/fsdp", lambda p, b: nm.nme(obj, p, b).mv(v), fsdp=True)
        self.both("op/split_product/fsdp", lambda p, b: nm.split_product(obj, p, b, v), fsdp=True)
        self.both("op/hessian_linearized", lambda p, b: nm.hessian(obj, p, b).linearize().mv(v))
        self.both("op/ntk", lambda p, b: nm.ntk(obj, p, b[0]))
        self.both("op/gauss_newton_as_matrix", lambda p, b: nm.gauss_newton(obj, p, b).as_matrix())
        self.both(
            "est/trace_hutchpp_GN",
            lambda p, b: nm.trace(nm.gauss_newton(obj, p, b), key, 9, method="hutchpp"),
        )
        self.both("est/trace_exact_NME", lambda p, b: nm.trace(nm.nme(obj, p, b), method="exact"))
        self.both("est/trace_fisher", lambda p, b: nm.trace(nm.fisher(obj, p, b, key, 2), key, 8))
        self.both("est/diagonal_exact_NME", lambda p, b: nm.diagonal(nm.nme(obj, p, b), exact=True))
        self.both(
            "est/gn_trace_sampled_per_example",
            lambda p, b: nm.gn_trace_sampled(obj, p, b, key, 2, form="per_example"),
        )
        obj, params, batch = self.bn_problem(conv=True)
        w = jax.tree.map(jnp.ones_like, params)
        self.record(
            "bn_conv/hessian",
            nm.hessian(obj, params, batch).mv(w),
            nm.hessian(
                obj, self.par.replicate(params, self.mesh), self.par.shard_batch(batch, self.mesh)
            ).mv(w),
        )
        self.batchnorm(conv=True, prefix="bn_conv")

    def batchnorm(self, conv: bool = False, prefix: str = "bn") -> None:
        """Train-mode BatchNorm under jit with a sharded batch uses the *global* statistics."""
        jax = self.jax
        obj, params, batch = self.bn_problem(conv=conv)

        @jax.jit
        def loss_grad_stats(p, b):
            (loss, stats), grads = jax.value_and_grad(obj.value_and_aux, has_aux=True)(p, b)
            return loss, grads, stats

        single = loss_grad_stats(params, batch)
        sharded = loss_grad_stats(
            self.par.replicate(params, self.mesh), self.par.shard_batch(batch, self.mesh)
        )
        self.record(f"{prefix}/loss_grads_stats", single, sharded)
        # What per-device BatchNorm would give: each shard's statistics, averaged. The running
        # variance differs from the global one, so the check above tells the two apart.
        per_shard = [loss_grad_stats(params, shard)[2] for shard in self.shards(batch)]
        mean_stats = jax.tree.map(lambda *xs: sum(xs) / len(xs), *per_shard)
        self.record(
            f"{prefix}/stats_are_not_per_shard", single[2], mean_stats, tol=1e-4, expect="differ"
        )

    def bad_input(self) -> None:
        """A batch not divisible by the device count is refused with a clear message."""
        x, y = self.batch
        try:
            self.par.shard_batch((x[:6], y[:6]), self.mesh)
            message = ""
        except ValueError as error:
            message = str(error)
        ok = "divisible by the 4 devices" in message and "got 6 examples" in message
        self.results["errors/shard_batch_not_divisible"] = {
            "err": 0.0 if ok else 1.0,
            "tol": 0.0,
            "ok": ok,
            "message": message,
        }

    def constrain(self) -> None:
        """``constrain_batch`` splits a batch built inside jit (and under vmap) over the given mesh."""
        jax, jnp, par = self.jax, self.jnp, self.par
        from jax.sharding import PartitionSpec as P

        data = jnp.arange(64.0).reshape(16, 4)

        def gather(idx, mesh=self.mesh):
            return par.constrain_batch(jnp.take(data, idx, axis=0), mesh) * 2.0

        idx = jnp.arange(16)[::-1]
        out = jax.jit(gather)(idx)
        stacked = jax.jit(jax.vmap(gather))(jnp.stack([idx, idx]))
        outside = jax.jit(lambda i: gather(i, None))(idx)  # no mesh: left alone
        checks = {
            "constrain/splits_batch": out.sharding.spec == P("data")
            and len(out.sharding.device_set) == self.num,
            "constrain/under_vmap": stacked.sharding.spec == P(None, "data"),
            "constrain/no_mesh_no_op": len(outside.sharding.device_set) == 1,
            "constrain/values": bool(jnp.all(out == data[::-1] * 2.0)),
        }
        for name, ok in checks.items():
            self.results[name] = {"err": 0.0 if ok else 1.0, "tol": 0.0, "ok": bool(ok)}

    # ------------------------------------------------------------------------------------
    # section: every regularizer's step, global (jit + NamedSharding)

    def regularizer_list(self):
        from nmelab import regularizers

        return [
            ("none", regularizers.get("none")),
            ("gradient_penalty_p1", regularizers.get("gradient_penalty", rho=0.1, p=1)),
            ("gradient_penalty_p2", regularizers.get("gradient_penalty", rho=0.1, p=2)),
            ("sam", regularizers.get("sam", rho=0.1)),
            ("usam", regularizers.get("usam", rho=0.1)),
            ("weight_noise", regularizers.get("weight_noise", sigma=0.1)),
            ("hessian_trace", regularizers.get("hessian_trace", sigma=0.3, num_probes=2)),
            ("nme_trace", regularizers.get("nme_trace", sigma=0.3, num_probes=2)),
            ("gn_trace", regularizers.get("gn_trace", sigma=0.3)),
            ("gn_trace_per_example", regularizers.get("gn_trace", sigma=0.3, form="per_example")),
        ]

    def step_fn(self, objective):
        """A fresh jitted ``reg.value_and_grad`` per call site.

        One jitted function per regularizer, not one shared by all, so that no comparison depends
        on the jit cache telling regularizer classes apart (in JAX 0.10.2 the treedefs of two
        ``register_dataclass`` classes with the same fields compare equal; nmelab's regularizers
        guard against it in ``regularizers/base.py``).
        """
        return self.jax.jit(lambda reg, p, b, k: reg.value_and_grad(objective, p, b, k))

    def regularizers(self, slow: bool = False) -> None:
        from nmelab import regularizers

        covered = {reg.name for _, reg in self.regularizer_list()}
        missing = sorted(set(regularizers.NAMES) - covered)
        self.results["reg/all_covered"] = {  # a new regularizer without a check fails the test
            "err": float(len(missing)),
            "tol": 0.0,
            "ok": not missing,
            "missing": missing,
        }
        fparams = self.par.shard_params(self.params, self.mesh)
        fsdp = ("gradient_penalty_p1", "hessian_trace", "gn_trace") if slow else ("sam",)
        # the per-example form of gn_trace (same regularizer, another estimator) runs when slow
        replicated = (
            ("gn_trace_per_example",)
            if slow
            else tuple(n for n, _ in self.regularizer_list() if n != "gn_trace_per_example")
        )
        for name, reg in self.regularizer_list():
            if name not in fsdp and name not in replicated:
                continue
            step = self.step_fn(self.objective)
            single = step(reg, self.params, self.batch, self.key)
            if name in replicated:
                self.record(f"reg/{name}", single, step(reg, self.rparams, self.sbatch, self.key))
            if name in fsdp:
                self.record(f"reg/{name}/fsdp", single, step(reg, fparams, self.sbatch, self.key))

        # train-mode BatchNorm (has_aux): value, updated (global) statistics and direction
        bobj, bparams, bbatch = self.bn_problem()
        rb = self.par.replicate(bparams, self.mesh)
        sb = self.par.shard_batch(bbatch, self.mesh)
        names = (
            ("gradient_penalty_p1", "weight_noise", "hessian_trace", "gn_trace")
            if slow
            else ("sam",)
        )
        for name in names:
            reg = dict(self.regularizer_list())[name]
            step = self.step_fn(bobj)
            self.record(
                f"reg_bn/{name}", step(reg, bparams, bbatch, self.key), step(reg, rb, sb, self.key)
            )

    def regularizers_slow(self) -> None:
        self.regularizers(slow=True)

    # ------------------------------------------------------------------------------------
    # section: m-sharpness (per-shard regularizers) and the factor-of-M trap

    def shards(self, batch):
        m = batch[0].shape[0] // self.num
        return [
            (batch[0][s * m : (s + 1) * m], batch[1][s * m : (s + 1) * m]) for s in range(self.num)
        ]

    def msharpness(self, slow: bool = False) -> None:
        jax, jnp, nm, par = self.jax, self.jnp, self.nmelab, self.par
        from jax.sharding import PartitionSpec as P

        from nmelab.curvature import hessian_vector_product

        obj, params, batch, mesh, key = (
            self.objective,
            self.params,
            self.batch,
            self.mesh,
            self.key,
        )
        v = jax.tree.map(jnp.ones_like, params)
        shards = self.shards(batch)

        if not slow:
            # 1. per-shard gradient and HVP equal the single-device ones on that shard's data
            grad_fn = jax.grad(obj.value)
            per_grad = jax.jit(par.per_shard_map(grad_fn, mesh))(self.rparams, self.sbatch)
            per_hvp = jax.jit(
                par.per_shard_map(lambda p, b, u: hessian_vector_product(obj, p, b, u), mesh)
            )(self.rparams, self.sbatch, v)
            for s, shard in enumerate(shards):
                self.record(
                    f"shard_map/grad/shard{s}",
                    grad_fn(params, shard),
                    jax.tree.map(lambda x, s=s: x[s], per_grad),
                )
                self.record(
                    f"shard_map/hvp/shard{s}",
                    hessian_vector_product(obj, params, shard, v),
                    jax.tree.map(lambda x, s=s: x[s], per_hvp),
                )

            # 2. the trap: without the cast to varying, grad w.r.t. replicated params inside
            #    shard_map is already summed over shards; pmean then gives M x the global HVP.
            def naive(p, b, u):
                return jax.lax.pmean(hessian_vector_product(obj, p, b, u), "data")

            naive_hvp = jax.jit(
                jax.shard_map(naive, mesh=mesh, in_specs=(P(), P("data"), P()), out_specs=P())
            )(self.rparams, self.sbatch, v)
            global_hvp = hessian_vector_product(obj, params, batch, v)
            self.record(
                "trap/naive_pmean_hvp_is_wrong", global_hvp, naive_hvp, tol=0.1, expect="differ"
            )
            self.record(
                "trap/naive_pmean_hvp_is_M_times",
                jax.tree.map(lambda x: self.num * x, global_hvp),
                naive_hvp,
            )

        # 3. every regularizer per shard == the explicit average over shards of the
        #    single-device step with key fold_in(key, s); SAM & co differ from the global step
        from _parallel_helpers import PER_SHARD_SLOW as expensive

        for name, reg in self.regularizer_list():
            if (name in expensive) != slow:
                continue
            step = self.step_fn(obj)
            got = step(par.per_shard(reg, mesh), self.rparams, self.sbatch, key)
            parts = [
                step(reg, params, shard, jax.random.fold_in(key, s))
                for s, shard in enumerate(shards)
            ]
            expected = jax.tree.map(lambda *xs: sum(xs) / len(xs), *parts)
            self.record(f"per_shard/{name}", expected, got)
            global_ = step(reg, params, batch, key)
            if name == "none":
                self.record("per_shard/none_equals_global", global_, got)
            else:
                self.record(
                    f"per_shard/{name}_differs_from_global", global_, got, tol=1e-3, expect="differ"
                )
        if slow:
            # independent_keys=False: the same probes on every shard -> the global Hutchinson step
            reg = dict(self.regularizer_list())["hessian_trace"]
            step = self.step_fn(obj)
            self.record(
                "per_shard/hessian_trace_shared_key_equals_global",
                step(reg, params, batch, key),
                step(
                    par.per_shard(reg, mesh, independent_keys=False), self.rparams, self.sbatch, key
                ),
            )
            return
        # independent_keys=False: the same noise on every shard -> weight noise equals global
        reg = dict(self.regularizer_list())["weight_noise"]
        step = self.step_fn(obj)
        self.record(
            "per_shard/weight_noise_shared_key_equals_global",
            step(reg, params, batch, key),
            step(par.per_shard(reg, mesh, independent_keys=False), self.rparams, self.sbatch, key),
        )

        # 4. BatchNorm (has_aux): per-shard statistics, aux averaged over shards
        bobj, bparams, bbatch = self.bn_problem()
        step = self.step_fn(bobj)
        reg = dict(self.regularizer_list())["sam"]
        got = step(
            par.per_shard(reg, mesh),
            par.replicate(bparams, mesh),
            par.shard_batch(bbatch, mesh),
            key,
        )
        parts = [step(reg, bparams, shard, key) for shard in self.shards(bbatch)]
        self.record("per_shard_bn/sam", jax.tree.map(lambda *xs: sum(xs) / len(xs), *parts), got)

        # 5. inside jit(vmap) over seeds, as in the trainer; aux "concat" for per-example logits
        def apply_fn(p, x):
            z = obj.apply_fn(p, x)
            return z, z

        cobj = nm.Objective(apply_fn, "cross_entropy", has_aux=True)
        creg = par.per_shard(reg, mesh, aux_reduction="concat")
        stacked = jax.tree.map(lambda x: jnp.stack([x, 1.1 * x]), params)
        got = jax.jit(jax.vmap(lambda p: creg.value_and_grad(cobj, p, self.sbatch, key)))(stacked)
        step = self.step_fn(obj)
        for i in range(2):
            p_i = jax.tree.map(lambda x, i=i: x[i], stacked)
            parts = [step(reg, p_i, shard, key) for shard in shards]
            value, grads = jax.tree.map(lambda *xs: sum(xs) / len(xs), *parts)
            logits = obj.outputs(p_i, batch[0])
            self.record(
                f"per_shard_vmap/seed{i}",
                ((value, logits), grads),
                jax.tree.map(lambda x, i=i: x[i], got),
            )

    def msharpness_slow(self) -> None:
        self.msharpness(slow=True)


if __name__ == "__main__":
    main()
