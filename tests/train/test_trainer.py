"""The trainer: files and summary, vmapped seeds, device vs host batches, divergence, collapse."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import assert_trees_equal, tiny_config

from nmelab import data as nmedata
from nmelab import regularizers
from nmelab.train import (
    apply_overrides,
    build_run,
    classify,
    init_state,
    load_config,
    make_train_step,
    restore_state,
    train_and_evaluate,
)
from nmelab.train.state import zero_metrics

REPO = Path(__file__).resolve().parents[2]


def test_run_writes_config_metrics_and_summary(tmp_path):
    config = tiny_config(num_seeds=2, eval_every_epochs=1, checkpoint_every_steps=4)
    summary = train_and_evaluate(config, tmp_path)

    assert json.loads((tmp_path / "config.json").read_text())["num_seeds"] == 2
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert summary["status"] == ["ok", "ok"]
    assert summary["diverged_step"] == [None, None]
    assert summary["seeds"] == [0, 1]
    assert summary["steps"] == summary["total_steps"] == 8  # 2 epochs x 64 // 16
    assert summary["num_params"] == 8 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10
    for key in ("test_loss", "test_accuracy", "train_loss", "train_accuracy"):
        assert len(summary[key]) == 2 and all(np.isfinite(summary[key]))
    # the seeds are different runs
    assert summary["train_loss"][0] != summary["train_loss"][1]

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test" and not r.get("final")]
    final = [r for r in records if r.get("final")]
    assert [r["step"] for r in train] == [2, 4, 6, 8]
    assert [r["step"] for r in test] == [4]  # epoch 1 (the end is the final evaluation)
    assert {r["split"] for r in final} == {"test", "train_eval"}
    for r in train:
        assert len(r["loss"]) == len(r["accuracy"]) == 2
        assert r["lr"] >= 0 and r["epoch"] == r["step"] / 4
    # the final record holds the summary's numbers
    final_test = next(r for r in final if r["split"] == "test")
    assert final_test["accuracy"] == summary["test_accuracy"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["4", "8"]


def test_finished_run_is_returned_not_retrained(tmp_path):
    config = tiny_config(num_epochs=1.0)
    first = train_and_evaluate(config, tmp_path)
    metrics = (tmp_path / "metrics.jsonl").read_text()
    second = train_and_evaluate(config, tmp_path)
    assert second == first
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    with pytest.raises(ValueError, match="different config.*learning_rate"):
        train_and_evaluate(apply_overrides(config, {"learning_rate": 0.5}), tmp_path)


def test_vmapped_seed_equals_its_single_run(tmp_path):
    """Seed i of a vmapped run is the run with seed + i (same init, data order and noise)."""
    both = tiny_config(
        num_seeds=2, num_epochs=1.0, regularizer="weight_noise", regularizer_params={"sigma": 0.01}
    )
    train_and_evaluate(both, tmp_path / "both")
    vmapped = restore_state(both, tmp_path / "both")
    single_config = apply_overrides(both, {"num_seeds": 1, "seed": 1})
    train_and_evaluate(single_config, tmp_path / "one")
    single = restore_state(single_config, tmp_path / "one")
    for a, b in zip(jax.tree.leaves(vmapped.params), jax.tree.leaves(single.params), strict=True):
        np.testing.assert_allclose(np.asarray(a)[1], np.asarray(b)[0], rtol=2e-5, atol=2e-6)


def test_unrolled_seeds_equal_vmapped_seeds(tmp_path):
    """seed_batching="unroll" (auto for CNNs on CPU) trains the same seeds as "vmap"."""
    base = tiny_config(model="cnn_tiny", num_seeds=2, num_epochs=1.0)
    states = {}
    for mode in ("vmap", "unroll"):
        config = apply_overrides(base, {"seed_batching": mode})
        assert build_run(config).seed_batching == mode
        train_and_evaluate(config, tmp_path / mode)
        states[mode] = restore_state(config, tmp_path / mode)
    assert build_run(base).seed_batching == "unroll"  # auto: a CNN on the CPU
    assert build_run(tiny_config()).seed_batching == "vmap"  # auto: an MLP
    for a, b in zip(*(jax.tree.leaves(states[m].params) for m in states), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_device_gather_equals_host_batches():
    """The in-step gather visits the batches of nmelab.data.batches, in the same order."""
    config = tiny_config(
        dataset_kwargs={"shape": (4, 4, 1), "num_train": 48},
        augment=True,
        model="cnn_tiny",
        batch_size=16,
    )
    run = build_run(config)
    source = run.source
    assert run.augment
    state = init_state(run)
    key = np.asarray(state.data_key[0])
    for epoch in (0, 3):
        descriptions = source.train_batches(state.data_key, epoch * run.steps_per_epoch)
        expected = list(
            nmedata.batches(
                source.dataset.x_train,
                source.dataset.y_train,
                16,
                key,
                epoch,
                augment_fn=nmedata.random_crop_flip,
            )
        )
        for position, (x_host, y_host) in enumerate(expected):
            description = jax.tree.map(lambda a: a[0], next(descriptions))  # seed 0
            step = jnp.int32(epoch * run.steps_per_epoch + position)
            (x, y), augmentation_key = source.seed_batch(source.arrays, description, step)
            x = nmedata.random_crop_flip(x, jax.random.fold_in(augmentation_key, position))
            np.testing.assert_array_equal(np.asarray(y), y_host)
            np.testing.assert_array_equal(np.asarray(x), np.asarray(x_host))


def test_host_fed_run_matches_device_run(tmp_path):
    device = tiny_config(data_on_device=True)
    host = apply_overrides(device, {"data_on_device": False})
    train_and_evaluate(device, tmp_path / "device")
    train_and_evaluate(host, tmp_path / "host")
    a, b = restore_state(device, tmp_path / "device"), restore_state(host, tmp_path / "host")
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_host_fed_data_refuses_several_seeds():
    with pytest.raises(ValueError, match="num_seeds.*host-fed"):
        build_run(tiny_config(data_on_device=False, num_seeds=2))


def test_diverged_seed_is_frozen_and_the_other_continues():
    run = build_run(tiny_config(num_seeds=2))
    step_fn = make_train_step(run)
    state = init_state(run)
    poisoned = state.replace(params=jax.tree.map(lambda p: p.at[1].multiply(1e30), state.params))

    def chunk(s):
        acc = zero_metrics(2)
        batches = run.source.train_batches(jnp.array(s.data_key), 0)
        for _ in range(3):
            s, acc = step_fn(s, acc, run.regularizer, run.source.arrays, next(batches))
        return s, acc

    clean_state, _ = chunk(jax.tree.map(jnp.copy, state))
    before = jax.tree.map(lambda p: np.array(p, copy=True), poisoned.params)
    after, acc = chunk(poisoned)
    assert np.asarray(after.diverged_at).tolist() == [-1, 0]
    assert int(after.step) == 3
    # seed 1 keeps its last finite state, seed 0 trains as if alone
    assert_trees_equal(
        jax.tree.map(lambda p: p[1], after.params), jax.tree.map(lambda p: p[1], before)
    )
    for x, y in zip(
        jax.tree.leaves(after.params), jax.tree.leaves(clean_state.params), strict=True
    ):
        np.testing.assert_allclose(np.asarray(x)[0], np.asarray(y)[0], rtol=1e-6, atol=1e-7)
    assert np.asarray(acc["count"]).tolist() == [3.0, 0.0]


def test_divergence_is_recorded_and_the_cli_exits_cleanly(tmp_path):
    workdir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "nmelab",
        "train",
        "--config",
        str(REPO / "configs/digits_mlp.py"),
        "--workdir",
        str(workdir),
        "--set",
        "learning_rate=1e6",
        "--set",
        "model=mlp_tiny",
        "--set",
        "num_epochs=3",
        "--set",
        "progress=False",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == ["diverged"]
    step = summary["diverged_step"][0]
    assert isinstance(step, int) and 0 <= step < summary["total_steps"]
    assert summary["steps"] < summary["total_steps"]  # stopped early: every seed diverged
    assert summary["test_accuracy"] == [None]
    assert f"diverged at step {step}" in done.stdout


@pytest.mark.slow
def test_image_folder_run(tmp_path):
    """ImageNet layout: JPEGs decoded per batch on the host, one seed, resnet_tiny."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 2)):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "data" / split / cls / f"{i}.JPEG")
    config = tiny_config(
        dataset="imagenet",
        data_dir=str(tmp_path / "data"),
        dataset_kwargs={"image_size": 16, "resize_size": 18},
        model="resnet_tiny",
        batch_size=4,
        eval_batch_size=4,
        num_epochs=2.0,
        **{
            "curvature.every_steps": 2,
            "curvature.probe_batch_size": 4,
            "curvature.num_probes": 2,
            "curvature.lanczos_iters": 3,
        },
    )
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["steps"] == 4 and summary["num_classes"] == 2
    assert all(np.isfinite(summary["test_loss"] + summary["train_loss"]))
    records = [
        json.loads(line) for line in (tmp_path / "run/curvature.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == [0, 2, 4]


def test_classify_outcomes():
    k = 10
    assert classify(math.log(k), 0.1, k, diverged_step=-1) == "collapsed"
    assert classify(0.99 * math.log(k), 0.115, k, diverged_step=-1) == "collapsed"
    assert classify(math.log(k), 0.13, k, diverged_step=-1) == "ok"  # above chance + 0.02
    assert classify(0.9 * math.log(k), 0.1, k, diverged_step=-1) == "ok"  # loss below 0.95 ln K
    assert classify(0.1, 0.97, k, diverged_step=-1) == "ok"
    assert classify(0.1, 0.97, k, diverged_step=12) == "diverged"
    assert classify(None, None, k, diverged_step=-1) == "diverged"


def test_digits_smoke_reaches_high_accuracy_quickly(tmp_path):
    """A fast run of the digits recipe (8 epochs) already clears 95 %."""
    config = apply_overrides(
        load_config(REPO / "configs/digits_mlp.py"),
        {"num_epochs": 8, "progress": False, "checkpoint_every_steps": 0},
    )
    summary = train_and_evaluate(config, tmp_path)
    assert summary["status"] == ["ok"]
    assert summary["test_accuracy"][0] >= 0.95


@pytest.mark.slow
def test_digits_mlp_config_reaches_95_percent_with_sgd(tmp_path):
    config = apply_overrides(
        load_config(REPO / "configs/digits_mlp.py"), {"progress": False, "num_seeds": 3}
    )
    assert config.regularizer == "none"
    summary = train_and_evaluate(config, tmp_path)
    assert summary["status"] == ["ok"] * 3
    assert min(summary["test_accuracy"]) >= 0.95


def test_regularizer_hyperparameters_reach_the_step():
    """rho is a traced leaf: SAM at two rho values differ, with one compiled step."""
    config = tiny_config(regularizer="sam", regularizer_params={"rho": 0.0})
    run = build_run(config)
    step_fn = make_train_step(run)
    state = init_state(run)
    description = next(run.source.train_batches(state.data_key, 0))
    results, sizes = [], []
    for rho in (0.0, 0.5):
        reg = regularizers.get("sam", rho=rho)
        state_copy = jax.tree.map(jnp.copy, state)
        out, _ = step_fn(state_copy, zero_metrics(1), reg, run.source.arrays, description)
        results.append(np.asarray(jax.tree.leaves(out.params)[0]))
        sizes.append(step_fn._cache_size())
    assert not np.array_equal(results[0], results[1])
    assert sizes[0] == sizes[1]  # no recompilation for the second rho
