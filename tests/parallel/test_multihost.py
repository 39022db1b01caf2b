"""Multi-host: a two-process ``jax.distributed`` run on localhost trains like one process.

The end-to-end test starts two worker processes (2 simulated CPU devices each, one 4-device
global mesh, gloo collectives) that train the tiny config through
:func:`nmelab.train.train_and_evaluate` into one shared workdir (Orbax writes the checkpoints
with multi-host semantics), and a single-process, single-device reference run; the logged losses
and the final metrics must agree to float32 tolerance. The in-process tests cover
:func:`host_shard` / :func:`host_slice` and :func:`initialize`'s argument handling.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from _parallel_helpers import HERE, clean_env, free_port, run_json

import nmelab.parallel as par
from nmelab.data.dataset import Dataset

WORKER = str(HERE / "_multihost_worker.py")
RTOL = 1e-4  # float32 sums reordered across devices, compounded over a few SGD steps


def _compare(reference: dict, other: dict) -> None:
    np.testing.assert_allclose(other["train_losses"], reference["train_losses"], rtol=RTOL)
    for key in ("test_loss", "train_loss", "test_accuracy", "train_accuracy"):
        np.testing.assert_allclose(
            other["summary"][key], reference["summary"][key], rtol=RTOL, err_msg=key
        )
    assert other["summary"]["steps"] == reference["summary"]["steps"]


def _two_processes(workdir, *extra: str, timeout: float = 600) -> list[dict]:
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                WORKER,
                "--devices",
                "2",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
                "--port",
                str(port),
                "--workdir",
                str(workdir),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
            cwd=HERE,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{err[-6000:]}"
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return outputs


def test_two_process_distributed_training_matches_one_process(tmp_path):
    workers = _two_processes(tmp_path / "distributed")
    reference = run_json([WORKER, "--devices", "1", "--workdir", str(tmp_path / "single")])
    assert reference["device_count"] == 1 and "disabled" in reference["mesh"]
    for i, out in enumerate(workers):
        assert out["process_index"] == i and out["process_count"] == 2
        assert out["device_count"] == 4 and "'data': 4" in out["mesh"]
        _compare(reference, out)
    # one checkpoint folder, written jointly (Orbax multi-host), with every saved step
    assert workers[0]["checkpoints"] == workers[1]["checkpoints"] == reference["checkpoints"]
    # process 0 alone writes the logs: no duplicated records
    assert len(workers[0]["train_losses"]) == len(reference["train_losses"])


@pytest.mark.slow
def test_single_process_mesh_and_m_sharpness_in_the_trainer(tmp_path):
    reference = run_json(
        [
            WORKER,
            "--devices",
            "1",
            "--workdir",
            str(tmp_path / "ref"),
            "--set",
            "regularizer=sam",
            "regularizer_params={'rho': 0.1}",
        ]
    )
    mesh = run_json(
        [
            WORKER,
            "--devices",
            "4",
            "--workdir",
            str(tmp_path / "mesh"),
            "--set",
            "regularizer=sam",
            "regularizer_params={'rho': 0.1}",
        ]
    )
    assert "'data': 4" in mesh["mesh"]
    _compare(reference, mesh)
    msharp = run_json(
        [
            WORKER,
            "--devices",
            "4",
            "--workdir",
            str(tmp_path / "msharp"),
            "--set",
            "regularizer=sam",
            "regularizer_params={'rho': 0.1}",
            "m_sharpness=True",
        ]
    )
    assert "m_sharpness=True" in msharp["mesh"]
    # per-shard SAM is a different algorithm: same number of steps, different losses
    assert msharp["summary"]["steps"] == reference["summary"]["steps"]
    assert not np.allclose(msharp["train_losses"], reference["train_losses"], rtol=RTOL)


# ------------------------------------------------------------------------------------------------
# in-process


def test_host_slice_blocks_cover_the_range_in_process_order():
    for num, count in ((16, 2), (17, 4), (3, 4), (0, 2)):
        dropped = [par.host_slice(num, p, count) for p in range(count)]
        assert all(s.stop - s.start == num // count for s in dropped)
        kept = [par.host_slice(num, p, count, drop_remainder=False) for p in range(count)]
        np.testing.assert_array_equal(
            np.concatenate([np.arange(num)[s] for s in kept]), np.arange(num)
        )
    assert par.host_slice(10, 0, 1) == slice(0, 10)


def test_host_shard_of_batch_indices_reassembles_the_global_batch():
    indices = np.random.default_rng(0).permutation(64)[:16]
    parts = [par.host_shard(indices, p, 2) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), indices)


def test_host_shard_kinds():
    np.testing.assert_array_equal(par.host_shard(10, 1, 2), np.arange(5, 10))
    np.testing.assert_array_equal(par.host_shard(list(range(6)), 2, 3), [4, 5])
    x, y = np.arange(12.0).reshape(6, 2), np.arange(6)
    hx, hy = par.host_shard((x, y), 0, 3)
    np.testing.assert_array_equal(hx, x[:2])
    np.testing.assert_array_equal(hy, y[:2])
    assert set(par.host_shard({"x": x, "y": y}, 1, 2)) == {"x", "y"}
    data = Dataset(x, y % 2, x[:3], y[:3] % 2, 2, "toy")
    shard = par.host_shard(data, 1, 2)
    np.testing.assert_array_equal(shard.x_train, x[3:])
    assert shard.num_test == 3  # the test split is kept whole
    # defaults: this process of this run
    np.testing.assert_array_equal(par.host_shard(5), np.arange(5))


def test_host_shard_errors():
    with pytest.raises(ValueError, match="process_index must be < process_count = 2"):
        par.host_shard(10, 2, 2)
    with pytest.raises(ValueError, match="process_count must be an integer >= 1"):
        par.host_shard(10, 0, 0)
    with pytest.raises(ValueError, match="same leading size"):
        par.host_shard((np.zeros(3), np.zeros(4)), 0, 2)
    with pytest.raises(TypeError, match="data must be"):
        par.host_shard("abc", 0, 2)
    with pytest.raises(ValueError, match="scalar"):
        par.host_shard(np.zeros(()), 0, 2)


def test_initialize_is_a_no_op_for_one_process(monkeypatch):
    for var in par.multihost.CLUSTER_ENV_VARS + ("SLURM_STEP_NODELIST",):
        monkeypatch.delenv(var, raising=False)
    info = par.initialize()
    assert info.process_count == 1 and info.is_main
    assert par.initialize(num_processes=1).process_index == 0
    assert not jax.distributed.is_initialized()


def test_initialize_argument_errors(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="together"):
        par.initialize("localhost:1234", 2)
    with pytest.raises(ValueError, match="together"):
        par.initialize(num_processes=2, process_id=0)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")  # the address from the env
    with pytest.raises(ValueError, match=r"process_id must be an integer in \[0, 2\)"):
        par.initialize(num_processes=2, process_id=2)
    with pytest.raises(ValueError, match=r"process_id must be an integer in \[0, 2\)"):
        par.initialize("localhost:1234", 2, 5)
    with pytest.raises(ValueError, match="num_processes must be an integer >= 1"):
        par.initialize("localhost:1234", 0, 0)


def test_abstract_with_shardings_targets_a_mesh():
    mesh = par.make_mesh()
    tree = {"w": np.zeros((4, 2), np.float32), "b": jax.ShapeDtypeStruct((3,), np.float32)}
    target = par.abstract_with_shardings(tree, par.replicated_sharding(mesh))
    assert target["w"].shape == (4, 2) and target["w"].sharding.mesh == mesh
    target = par.abstract_with_shardings(tree, par.param_shardings(tree, mesh))
    assert target["b"].dtype == np.float32
