"""The trainer can be forked: a loop of one's own over `train_step` reproduces it bitwise."""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _train_helpers import assert_trees_equal, tiny_config

from nmelab import data as nmedata
from nmelab import trace_split
from nmelab.train import (
    TrainedRun,
    apply_overrides,
    build_run,
    evaluate,
    init_state,
    load_config,
    load_trained,
    make_eval_step,
    restore_state,
    train_and_evaluate,
    train_step,
)

REPO = Path(__file__).resolve().parents[2]


def test_own_loop_over_train_step_equals_the_trainer_bitwise(tmp_path):
    """The digits MLP: ten lines of host batches and `train_step` give the trainer's weights."""
    config = apply_overrides(
        load_config(REPO / "configs/digits_mlp.py"), {"num_epochs": 3, "progress": False}
    )
    summary = train_and_evaluate(config, tmp_path)
    run = build_run(config)

    # the loop a researcher would write (one seed, no seed axis, batches from the host)
    step = jax.jit(
        functools.partial(
            train_step, model=run.model, loss=run.loss, tx=run.tx,
            learning_rate_fn=run.learning_rate_fn,
        )
    )  # fmt: skip
    state = init_state(run).seed(0)
    x, y = run.source.dataset.x_train, run.source.dataset.y_train
    for epoch in range(run.total_steps // run.steps_per_epoch):
        for batch in nmedata.batches(x, y, config.batch_size, state.data_key, epoch):
            state, metrics = step(state, batch, run.regularizer)

    assert int(state.step) == summary["steps"] == run.total_steps
    assert_trees_equal(state, restore_state(config, tmp_path).seed(0))
    stacked = jax.tree.map(lambda leaf: leaf[None], state.replace(step=None))
    test = evaluate(run, make_eval_step(run), stacked.replace(step=state.step), "test")
    assert test["loss"].tolist() == summary["test_loss"]


def test_load_trained_gives_one_seed_and_its_eval_objective(tmp_path):
    config = tiny_config(num_seeds=2, checkpoint_every_steps=4, max_checkpoints=3)
    train_and_evaluate(config, tmp_path)
    stacked = restore_state(config, tmp_path)
    for seed in (0, 1):
        trained = load_trained(tmp_path, seed=seed)
        assert isinstance(trained, TrainedRun)
        assert trained.step == 8 and trained.config.num_seeds == 2
        assert_trees_equal(trained.params, stacked.seed(seed).params)
        assert trained.dataset.num_train == 64
    early = load_trained(tmp_path, step=4)
    assert early.step == 4
    # the objective is usable as is by the curvature estimators
    x, y = np.asarray(trained.dataset.x_test), np.asarray(trained.dataset.y_test)
    estimate = trace_split(trained.objective, trained.params, (x, y), jax.random.key(0), 4)
    assert np.isfinite(float(estimate.hessian.value))
    loss = trained.objective.value(trained.params, (jnp.asarray(x), jnp.asarray(y)))
    assert np.isfinite(float(loss))


def test_load_trained_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path / 'missing'}.*no such folder"):
        load_trained(tmp_path / "missing")
    config = tiny_config(num_epochs=1.0)
    train_and_evaluate(config, tmp_path / "run")
    with pytest.raises(ValueError, match=r"checkpoints/7.*no checkpoint of step 7.*\[4\]"):
        load_trained(tmp_path / "run", step=7)
    with pytest.raises(ValueError, match="seed: expected an index 0..0"):
        load_trained(tmp_path / "run", seed=1)
    for path in (tmp_path / "run/checkpoints/4").rglob("*"):
        if path.is_file():
            path.write_bytes(np.random.default_rng(0).bytes(64))
    with pytest.raises(ValueError, match=r"checkpoints/4: unreadable checkpoint"):
        load_trained(tmp_path / "run", step=4)
    with pytest.raises(
        ValueError,
        match=r"checkpoints: no readable checkpoint.*To start the run afresh, move or delete",
    ):
        load_trained(tmp_path / "run")
    (tmp_path / "run/config.json").write_text("{")
    with pytest.raises(ValueError, match=r"config.json: not a readable JSON file"):
        load_trained(tmp_path / "run")
