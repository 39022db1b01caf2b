"""Sweeps: a list of tasks, one work directory each, run once, resumable, shardable.

A *task* (:class:`RunSpec`) is a runner (``"package.module:function"``) and a JSON config. Its
identity is a hash of both (:attr:`RunSpec.run_id`), so the same training run requested by two
experiments (e.g. the gradient-penalty runs of Fig. 2 and Fig. 6) is trained once and shared.

Layout under the sweep root::

    ROOT/runs/<run_id>/task.json     the runner and config (written before the run starts)
    ROOT/runs/<run_id>/...           whatever the runner writes (the trainer's checkpoints,
                                     metrics.jsonl, summary.json; a computation's arrays)
    ROOT/runs/<run_id>/result.json   written last, atomically: the task is done (with its
                                     summary, wall time ``elapsed_s`` and CPU time ``cpu_s``
                                     of every thread of the process that ran it)
    ROOT/runs/<run_id>/error.json    the traceback of the last failed attempt (removed on success)

Guarantees (tested by killing a sweep with SIGKILL and rerunning it):

* ``result.json`` is the only completion marker, written by ``os.replace`` of a fully written and
  fsynced temporary file, so it is either absent or complete; a rerun skips exactly the tasks that
  have one. Nothing is ever appended to a shared file, so nothing can be counted twice.
* A killed attempt leaves at most hidden temporary files (``.*.tmp``); they are deleted when the
  task is next started. Resuming *inside* a training run is the trainer's job (its checkpoints).
* A stored record is validated whenever it is read (:func:`load_record`: its fields, its digest
  and the task's own validator, e.g. a readable ``.npz``). One that fails counts as not done:
  its run folder is moved to ``ROOT/damaged/<run_id>.<n>`` (never deleted) with a warning
  naming both paths, and the task is recomputed (:func:`read_result`, :func:`set_aside`).
* ``--shard i/n`` (:func:`shard_runs`) deals the de-duplicated tasks, sorted by ``run_id``,
  round-robin: shards ``0 … n−1`` are disjoint and cover every task exactly once, provided every
  shard is given the same task list (same ``--scale`` and ``--experiments``).

Parallelism: ``workers > 1`` runs tasks in that many *spawned* processes (never forked: JAX is
multithreaded and forking it deadlocks). Each worker may be limited to ``threads`` XLA/BLAS
threads; it is set before JAX initialises its backend in that process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import math
import multiprocessing
import os
import platform
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nmelab._io import read_json, to_jsonable, write_json_atomic

__all__ = [
    "DamagedRecord",
    "RunSpec",
    "SweepSummary",
    "config_digest",
    "enable_compilation_cache",
    "is_done",
    "load_record",
    "parse_shard",
    "read_result",
    "run_dir",
    "run_sweep",
    "set_aside",
    "shard_runs",
]

RESULT_FILE = "result.json"
TASK_FILE = "task.json"
ERROR_FILE = "error.json"
RUNS_DIR = "runs"

# Config keys that do not change what a run computes; they are left out of the run identity so
# that e.g. a different --data-dir path or logging frequency does not retrain everything.
VOLATILE_KEYS: frozenset[str] = frozenset(
    {"progress", "data_dir", "log_every_steps", "checkpoint_every_steps", "eval_batch_size"}
)

ProgressFn = Callable[[str, "RunSpec", Mapping[str, Any]], None]


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------


def _canonical(obj: Any) -> Any:
    """Return ``obj`` as plain JSON types with tuples as lists and floats made canonical."""
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(repr(obj)) if math.isfinite(obj) else repr(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return _canonical(obj.item())
    raise TypeError(f"config: expected JSON-serialisable values, got {type(obj).__name__}: {obj!r}")


def _strip_volatile(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in VOLATILE_KEYS}


def config_digest(runner: str, config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the runner and the config without :data:`VOLATILE_KEYS`."""
    payload = json.dumps(
        {"runner": runner, "config": _canonical(_strip_volatile(config))},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class RunSpec:
    """One task of a sweep.

    Attributes:
      runner: ``"package.module:function"``; the function is called as ``fn(config, workdir)``
        with ``config`` a plain dict and ``workdir`` a ``str``, and returns a JSON-serialisable
        summary dict. A training run's summary holds a ``"seeds"`` list (one entry per seed).
      config: the JSON-serialisable config (nested dicts, lists, numbers, strings).
      name: a readable prefix of the run id (letters, digits, ``._-``), e.g.
        ``"cnn1d_bn-relu-penalty-rho0.3"``.
      cost: a rough relative cost (seconds on the reference CPU), used to start the longest tasks
        first and for the time estimate. Not part of the identity.
      validator: ``"package.module:function"`` called as ``fn(workdir, summary)`` when a stored
        result is read; it raises ``ValueError`` when the run's artifacts are damaged (``""``:
        only the record itself is checked). Not part of the identity.
      recipe: where the config came from, e.g. ``"configs/mnist1d_mlp.py:scale=quick"`` (shown
        by ``nmelab reproduce --plan``). Not part of the identity.
    """

    runner: str
    config: Mapping[str, Any]
    name: str
    cost: float = 1.0
    validator: str = ""
    recipe: str = ""

    def __post_init__(self) -> None:
        for field in ("runner", "validator"):
            value = getattr(self, field)
            if not isinstance(value, str) or (value or field == "runner") and value.count(":") != 1:
                raise ValueError(f"{field}: expected 'package.module:function', got {value!r}")
        if not isinstance(self.config, Mapping):
            raise TypeError(f"config: expected a mapping, got {type(self.config).__name__}")
        bad = set(self.name) - set(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
        )
        if not self.name or bad:
            raise ValueError(f"name: expected letters, digits and '._-', got {self.name!r}")
        object.__setattr__(self, "config", _canonical(self.config))

    @property
    def digest(self) -> str:
        """The full identity hash (:func:`config_digest`)."""
        return config_digest(self.runner, self.config)

    @property
    def run_id(self) -> str:
        """``"<name>-<first 10 hex digits of the digest>"``: the work-directory name."""
        return f"{self.name}-{self.digest[:10]}"

    def to_json(self) -> dict[str, Any]:
        """The task as a JSON object (what ``task.json`` holds)."""
        return {
            "run_id": self.run_id,
            "name": self.name,
            "runner": self.runner,
            "validator": self.validator,
            "config": self.config,
            "digest": self.digest,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunSpec) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)


def resolve_runner(runner: str) -> Callable[[dict, str], Mapping[str, Any]]:
    """Import ``"package.module:function"`` and return the function."""
    module_name, _, attr = runner.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"runner: cannot import {runner!r}: {err}") from err
    if not callable(fn):
        raise TypeError(f"runner: {runner!r} is not callable")
    return fn


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def run_dir(root: str | Path, spec: RunSpec | str) -> Path:
    """The work directory ``ROOT/runs/<run_id>`` of a task (or of a run id)."""
    run_id = spec.run_id if isinstance(spec, RunSpec) else str(spec)
    return Path(root) / RUNS_DIR / run_id


class DamagedRecord(ValueError):
    """A stored ``result.json`` (or an artifact its validator checks) failed validation."""


def _check_record(workdir: Path, record: Any, digest: str | None) -> dict[str, Any]:
    file = workdir / RESULT_FILE
    if not isinstance(record, dict):
        raise DamagedRecord(f"{file}: expected a JSON object, got {type(record).__name__}")
    summary = record.get("summary")
    if not isinstance(summary, dict):
        raise DamagedRecord(f"{file}: 'summary' must be an object, got {summary!r:.80}")
    for key in ("run_id", "runner", "digest"):
        if not isinstance(record.get(key), str):
            raise DamagedRecord(f"{file}: {key!r} must be a string, got {record.get(key)!r:.80}")
    if not isinstance(record.get("config"), dict):
        raise DamagedRecord(f"{file}: 'config' must be an object")
    if digest is not None and record["digest"] != digest:
        raise DamagedRecord(f"{file}: written for another config (digest {record['digest']:.10})")
    validator = record.get("validator") or ""
    if validator:
        if not validator.startswith("nmelab."):
            raise DamagedRecord(f"{file}: unknown validator {validator!r}")
        try:
            resolve_runner(validator)(str(workdir), summary)
        except (ValueError, TypeError, KeyError, OSError, EOFError) as err:
            raise DamagedRecord(f"{file}: {err}") from err
    return record


def load_record(workdir: str | Path, digest: str | None = None) -> dict[str, Any] | None:
    """The validated ``result.json`` of a work directory, or ``None`` if there is none.

    Validation: a JSON object with a ``summary`` object, string ``run_id``/``runner``/``digest``,
    a ``config`` object, the expected ``digest`` (when given), and the task's own validator
    (:attr:`RunSpec.validator`, e.g. per-seed lists of a training run, a readable ``.npz``).

    Raises:
      DamagedRecord: the file exists but fails validation (the message names the path).
    """
    workdir = Path(workdir)
    file = workdir / RESULT_FILE
    if not file.exists():
        return None
    try:
        record = read_json(file)
    except ValueError as err:
        raise DamagedRecord(str(err)) from err
    return _check_record(workdir, record, digest)


DAMAGED_DIR = "damaged"


def set_aside(root: str | Path, workdir: str | Path, reason: str) -> Path:
    """Move a damaged run folder to ``ROOT/damaged/<run_id>.<n>`` (never deleted) and warn."""
    workdir = Path(workdir)
    target_dir = Path(root) / DAMAGED_DIR
    target_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    while (target := target_dir / f"{workdir.name}.{n}").exists():
        n += 1
    os.replace(workdir, target)
    warnings.warn(
        f"damaged run record: {reason}; moved {workdir} to {target}, it will be recomputed",
        stacklevel=2,
    )
    return target


def read_result(root: str | Path, spec: RunSpec) -> dict[str, Any] | None:
    """The validated result of ``spec`` under ``root``; a damaged one is set aside (→ ``None``)."""
    workdir = run_dir(root, spec)
    try:
        return load_record(workdir, spec.digest)
    except DamagedRecord as err:
        set_aside(root, workdir, str(err))
        return None


def is_done(root: str | Path, spec: RunSpec) -> bool:
    """Whether the task has a valid ``result.json`` (a damaged one is set aside: not done)."""
    return read_result(root, spec) is not None


def _remove_stale_temporaries(workdir: Path) -> None:
    """Delete hidden temporaries a killed attempt left (ours ``.*.tmp-*``, the trainer's ``.*.tmp``)."""
    for tmp in [*workdir.glob(".*.tmp-*"), *workdir.glob(".*.tmp")]:
        if not tmp.is_file():
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()


# --------------------------------------------------------------------------------------------
# sharding
# --------------------------------------------------------------------------------------------


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse ``"i/n"`` (``0 ≤ i < n``) into ``(i, n)``; ``None`` stays ``None``.

    Raises:
      ValueError: not of the form ``i/n`` with integers ``0 ≤ i < n``.
    """
    if text is None:
        return None
    try:
        index_text, count_text = str(text).split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"shard: expected 'i/n' with integers 0 <= i < n, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"shard: expected 'i/n' with 0 <= i < n (0-based, e.g. SLURM --array=0-{max(count, 1) - 1}),"
            f" got {text!r}"
        )
    return index, count


def shard_runs(runs: Iterable[RunSpec], index: int, count: int) -> list[RunSpec]:
    """Return shard ``index`` of ``count`` of the de-duplicated tasks.

    Tasks are de-duplicated by identity, sorted by ``run_id`` and dealt round-robin, so the shards
    are disjoint, their union is every task, and sizes differ by at most one. The partition
    depends only on the *set* of tasks, not on their order.

    Raises:
      ValueError: ``count < 1`` or ``index`` outside ``[0, count)``.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"index, count: expected 0 <= index < count, got {index}, {count}")
    unique = sorted(
        {spec.digest: spec for spec in runs}.values(), key=lambda s: (s.run_id, s.digest)
    )
    return unique[index::count]


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def _init_worker(threads: int | None, cache_dir: str | None = None) -> None:
    """Set up a spawned worker before JAX initialises its backend.

    ``threads == 1`` turns off XLA:CPU's multithreaded Eigen kernels and BLAS threads (one worker
    per core instead of every worker fighting for every core). ``cache_dir`` turns on JAX's
    persistent compilation cache there (:func:`enable_compilation_cache`).
    """
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    if cache_dir:
        enable_compilation_cache(cache_dir)


def enable_compilation_cache(cache_dir: str | Path) -> None:
    """Turn on JAX's persistent compilation cache in ``cache_dir`` for this process.

    Tasks that differ only in data (seed, ρ, σ: arguments of the compiled step, not constants)
    compile to the same program; with the cache only the first compiles, in any process. Measured
    on the 2-core CPU: a CNN-BN penalty run of 3 epochs took 16.3 s cold and 5.7 s with a warm
    cache. Every size and time threshold is set to 0 so small CPU programs are cached too.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def execute(task: Mapping[str, Any], root: str) -> dict[str, Any]:
    """Run one task (a :meth:`RunSpec.to_json` dict) in its work directory; never raises.

    Returns:
      ``{"run_id", "ok": bool, "summary" | "error", "elapsed_s", "skipped": bool}``.
    """
    workdir = Path(root) / RUNS_DIR / task["run_id"]
    try:
        existing = load_record(workdir, task["digest"])
    except DamagedRecord as err:
        set_aside(root, workdir, str(err))
        existing = None
    if existing is not None:
        return {
            "run_id": task["run_id"],
            "ok": True,
            "skipped": True,
            "summary": existing["summary"],
            "elapsed_s": existing.get("elapsed_s", 0.0),
        }
    workdir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(workdir)
    write_json_atomic(workdir / TASK_FILE, dict(task))
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        summary = resolve_runner(task["runner"])(
            json.loads(json.dumps(task["config"])), str(workdir)
        )
        summary = to_jsonable(summary)
    except Exception as err:  # noqa: BLE001 - one failed task must not stop the sweep
        elapsed = time.perf_counter() - start
        text = "".join(traceback.format_exception(err))
        with contextlib.suppress(OSError):
            write_json_atomic(
                workdir / ERROR_FILE,
                {
                    "run_id": task["run_id"],
                    "error": repr(err),
                    "traceback": text,
                    "elapsed_s": elapsed,
                },
            )
        return {
            "run_id": task["run_id"],
            "ok": False,
            "skipped": False,
            "error": repr(err),
            "traceback": text,
            "elapsed_s": elapsed,
        }
    elapsed = time.perf_counter() - start
    record = {
        **dict(task),
        "summary": summary,
        "elapsed_s": elapsed,
        "cpu_s": time.process_time() - cpu_start,
        "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
    }
    write_json_atomic(workdir / RESULT_FILE, record)
    with contextlib.suppress(FileNotFoundError):
        (workdir / ERROR_FILE).unlink()
    return {
        "run_id": task["run_id"],
        "ok": True,
        "skipped": False,
        "summary": summary,
        "elapsed_s": elapsed,
    }


@dataclasses.dataclass
class SweepSummary:
    """What a call of :func:`run_sweep` did.

    Attributes:
      total: tasks asked for (after de-duplication, before sharding).
      in_shard: tasks in this shard.
      already_done: tasks of this shard skipped because ``result.json`` existed.
      completed: tasks run to completion now.
      failed: ``run_id -> error message`` of tasks whose runner raised (rerun to retry).
      elapsed_s: wall time of the call.
    """

    total: int = 0
    in_shard: int = 0
    already_done: int = 0
    completed: int = 0
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def remaining(self) -> int:
        """Tasks of this shard still without a result."""
        return self.in_shard - self.already_done - self.completed


def run_sweep(
    runs: Sequence[RunSpec],
    root: str | Path,
    *,
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    on_event: ProgressFn | None = None,
) -> SweepSummary:
    """Run every task of ``runs`` that has no result yet under ``root``.

    Args:
      runs: the tasks; duplicates (same identity) are run once.
      root: the sweep root; work directories are ``root/runs/<run_id>``.
      workers: ``1`` runs tasks in this process, one after the other; ``N > 1`` runs them in ``N``
        spawned processes.
      shard: ``(i, n)`` to run only shard ``i`` of ``n`` (:func:`shard_runs`).
      threads: XLA/BLAS threads per spawned worker (``None``: leave the defaults).
      cache_dir: JAX persistent compilation cache folder (``None``: off), shared by every worker
        and by later sweeps (:func:`enable_compilation_cache`); with ``workers == 1`` it is
        turned on in the calling process.
      on_event: called as ``on_event(kind, spec, info)`` with ``kind`` one of ``"skip"`` (already
        done), ``"start"``, ``"done"`` (``info["summary"]``, ``info["elapsed_s"]``) and
        ``"fail"`` (``info["error"]``, ``info["traceback"]``), from the calling process.

    Returns:
      A :class:`SweepSummary`. Failed tasks are reported there (and in their ``error.json``),
      not raised: rerun the sweep to retry them.

    Raises:
      ValueError: ``workers < 1`` or a malformed ``shard``.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    start = time.perf_counter()
    root = Path(root)
    unique = list({spec.digest: spec for spec in runs}.values())
    index, count = shard if shard is not None else (0, 1)
    mine = shard_runs(unique, index, count)
    summary = SweepSummary(total=len(unique), in_shard=len(mine))
    emit = on_event or (lambda kind, spec, info: None)
    todo: list[RunSpec] = []
    for spec in mine:
        done = read_result(root, spec)
        if done is not None:
            summary.already_done += 1
            emit("skip", spec, {"summary": done["summary"]})
        else:
            todo.append(spec)
    todo.sort(key=lambda s: (-s.cost, s.run_id))

    def record(spec: RunSpec, outcome: Mapping[str, Any]) -> None:
        if outcome["ok"]:
            summary.completed += 1
            emit("done", spec, outcome)
        else:
            summary.failed[spec.run_id] = outcome["error"]
            emit("fail", spec, outcome)

    if workers == 1 or len(todo) <= 1:
        if cache_dir and todo:
            enable_compilation_cache(cache_dir)
        for spec in todo:
            emit("start", spec, {})
            record(spec, execute(spec.to_json(), str(root)))
    else:
        _run_parallel(todo, root, workers, threads, cache_dir, emit, record)
    summary.elapsed_s = time.perf_counter() - start
    return summary


def _worker_died(err: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": f"worker process died: {err}", "traceback": "", "elapsed_s": 0.0}


def _run_parallel(
    todo: list[RunSpec],
    root: Path,
    workers: int,
    threads: int | None,
    cache_dir: str | Path | None,
    emit: ProgressFn,
    record: Callable[[RunSpec, Mapping[str, Any]], None],
) -> None:
    """Run ``todo`` in spawned workers; a worker that dies fails only the task it was running."""
    pending = list(todo)
    ctx = multiprocessing.get_context("spawn")
    while pending:
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(workers, len(pending)),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(threads, str(cache_dir) if cache_dir else None),
        ) as pool:
            # Keep at most `workers` tasks in flight so that "start" events are truthful and a
            # broken pool loses as little as possible.
            in_flight: dict[concurrent.futures.Future, RunSpec] = {}
            broken = False
            while (pending or in_flight) and not broken:
                while pending and len(in_flight) < workers:
                    spec = pending.pop(0)
                    emit("start", spec, {})
                    in_flight[pool.submit(execute, spec.to_json(), str(root))] = spec
                done, _ = concurrent.futures.wait(
                    in_flight, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    spec = in_flight.pop(future)
                    try:
                        record(spec, future.result())
                    except concurrent.futures.process.BrokenProcessPool as err:
                        broken = True
                        record(spec, _worker_died(err))
            for future, spec in in_flight.items():
                # The pool broke: the other in-flight tasks are lost too; report them as failed
                # unless they managed to finish.
                try:
                    record(spec, future.result())
                except Exception as err:  # noqa: BLE001
                    record(spec, _worker_died(err))
        if broken:
            continue
