"""Sweep mechanics: identity, atomic results, SIGKILL + rerun, shards, failures.

The fake runners below are imported by spawned workers and by a killed subprocess through the
runner string ``"test_sweep:<name>"`` (this folder is put on ``PYTHONPATH``).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nmelab._io import write_json_atomic
from nmelab.experiments import load_results
from nmelab.experiments.sweep import (
    DAMAGED_DIR,
    RESULT_FILE,
    RunSpec,
    is_done,
    load_record,
    parse_shard,
    run_dir,
    run_sweep,
    shard_runs,
)

HERE = Path(__file__).resolve().parent


def fake_train(config, workdir):
    """Behaves like a trainer: writes files bit by bit, sleeps, returns per-seed lists."""
    workdir = Path(workdir)
    with open(workdir / "metrics.jsonl", "a") as f:
        for step in range(5):
            f.write(json.dumps({"step": step}) + "\n")
            f.flush()
            time.sleep(config.get("sleep", 0.0) / 5)
    write_json_atomic(workdir / "summary.json", {"x": config["x"]})
    n = config.get("num_seeds", 3)
    return {
        "seeds": list(range(n)),
        "status": ["ok"] * (n - 1) + ["diverged"],
        "diverged_step": [None] * (n - 1) + [7],
        "test_accuracy": [0.5 + 0.01 * config["x"]] * (n - 1) + [None],
        "test_loss": [1.0] * (n - 1) + [None],
        "train_accuracy": [0.9] * (n - 1) + [None],
        "train_loss": [0.1] * (n - 1) + [None],
        "num_classes": 10,
    }


def fake_fail(config, workdir):
    raise RuntimeError(f"boom {config['x']}")


def specs(n, runner="test_sweep:fake_train", sleep=0.0):
    return [
        RunSpec(runner, {"x": i, "sleep": sleep, "num_seeds": 3}, f"fake-x{i}") for i in range(n)
    ]


def test_identity_ignores_volatile_keys_and_order():
    a = RunSpec("m:f", {"x": 1, "lr": 0.1, "progress": True, "data_dir": "/a"}, "a")
    b = RunSpec("m:f", {"lr": 0.1, "x": 1, "progress": False, "data_dir": "/b"}, "a")
    c = RunSpec("m:f", {"x": 2, "lr": 0.1}, "a")
    assert a.run_id == b.run_id and a == b and hash(a) == hash(b)
    assert a.run_id != c.run_id
    assert RunSpec("m:g", {"x": 1, "lr": 0.1}, "a").run_id != a.run_id


def test_bad_spec_arguments_raise():
    with pytest.raises(ValueError, match="runner"):
        RunSpec("no_colon", {}, "a")
    with pytest.raises(ValueError, match="name"):
        RunSpec("m:f", {}, "a b")
    with pytest.raises(TypeError, match="config"):
        RunSpec("m:f", {"x": object()}, "a")


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_every_run_exactly_once(count):
    runs = specs(23) + specs(5)  # duplicates are dropped
    shards = [shard_runs(runs, i, count) for i in range(count)]
    ids = [s.run_id for shard in shards for s in shard]
    assert sorted(ids) == sorted({s.run_id for s in runs})
    assert len(ids) == len(set(ids)) == 23
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    # the partition depends on the set of runs, not their order
    assert [s.run_id for s in shard_runs(list(reversed(runs)), 0, count)] == [
        s.run_id for s in shards[0]
    ]


def test_parse_shard():
    assert parse_shard("0/4") == (0, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_sharded_sweeps_together_complete_the_sweep(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    runs = specs(9)
    for i in range(3):
        summary = run_sweep(runs, tmp_path, shard=(i, 3))
        assert summary.in_shard == 3 and summary.completed == 3
    assert all(is_done(tmp_path, s) for s in runs)
    again = run_sweep(runs, tmp_path)
    assert again.completed == 0 and again.already_done == 9


def test_failed_task_is_recorded_and_retried(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    bad = RunSpec("test_sweep:fake_fail", {"x": 1}, "bad")
    summary = run_sweep([bad], tmp_path)
    assert list(summary.failed) == [bad.run_id] and "boom 1" in summary.failed[bad.run_id]
    assert not is_done(tmp_path, bad)
    error = json.loads((run_dir(tmp_path, bad) / "error.json").read_text())
    assert "RuntimeError" in error["traceback"]
    # an unimportable runner fails cleanly too
    summary = run_sweep([RunSpec("no_such_module_xyz:f", {}, "nope")], tmp_path)
    assert len(summary.failed) == 1


def _result_files(root):
    return sorted((Path(root) / "runs").glob(f"*/{RESULT_FILE}"))


def test_sigkill_mid_sweep_then_rerun_loses_and_duplicates_nothing(tmp_path):
    n = 16
    root = tmp_path / "sweep"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from test_sweep import specs
        from nmelab.experiments.sweep import run_sweep
        run_sweep(specs({n}, sleep=0.4), {str(root)!r}, workers=2)
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    deadline = time.time() + 120
    try:
        while len(_result_files(root)) < 3:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.time() < deadline, "the sweep made no progress"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its spawned workers
        proc.wait()
    finished = len(_result_files(root))
    assert 3 <= finished < n, "kill the sweep mid-way"
    for path in _result_files(root):  # what exists is complete
        assert load_record(path.parent) is not None

    sys.path.insert(0, str(HERE))
    try:
        summary = run_sweep(specs(n, sleep=0.4), root, workers=1)
    finally:
        sys.path.remove(str(HERE))
    assert summary.already_done == finished and summary.completed == n - finished
    files = _result_files(root)
    assert len(files) == n
    ids = [json.loads(p.read_text())["run_id"] for p in files]
    assert sorted(ids) == sorted(s.run_id for s in specs(n, sleep=0.4))
    leftovers = [p for p in root.rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    frame = load_results(root)
    assert len(frame) == 3 * n
    assert not frame.duplicated(["run_id", "seed"]).any()
    diverged = frame[frame["status"] == "diverged"]
    assert len(diverged) == n and (diverged["score"] == 10.0).all()


def test_parallel_workers_run_every_task(tmp_path):
    runs = specs(4)
    sys.path.insert(0, str(HERE))
    try:
        events = []
        summary = run_sweep(
            runs,
            tmp_path,
            workers=2,
            on_event=lambda kind, spec, info: events.append((kind, spec.run_id)),
        )
    finally:
        sys.path.remove(str(HERE))
    assert summary.completed == 4 and not summary.failed
    assert sorted(r for k, r in events if k == "done") == sorted(s.run_id for s in runs)
    assert sum(k == "start" for k, _ in events) == 4


def test_rerun_removes_stale_temporaries_and_ignores_torn_results(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    (spec,) = specs(1)
    workdir = run_dir(tmp_path, spec)
    workdir.mkdir(parents=True)
    (workdir / ".result.json.tmp-abc").write_text('{"half": ')  # ours, killed mid-write
    (workdir / ".summary.json.x1.tmp").write_text("{")  # the trainer's
    (workdir / RESULT_FILE).write_text('{"run_id": "torn"')  # not valid JSON: not done
    with pytest.warns(UserWarning, match="damaged run record.*result.json"):
        assert not is_done(tmp_path, spec)
    assert (tmp_path / DAMAGED_DIR / f"{spec.run_id}.0" / RESULT_FILE).exists()  # kept aside
    assert run_sweep([spec], tmp_path).completed == 1
    assert is_done(tmp_path, spec)
    assert not [p for p in workdir.iterdir() if ".tmp" in p.name]
