"""Resume survives a damaged newest checkpoint: it is set aside and the older one is used."""

import json

import numpy as np
import pytest
from _train_helpers import assert_trees_equal, tiny_config

from nmelab.train import restore_state, train_and_evaluate
from nmelab.train.metrics_io import read_jsonl

VOLATILE = ("elapsed_s", "examples_per_sec", "wall_time_s", "timing")


def _stable(record):
    return {k: v for k, v in record.items() if k not in VOLATILE}


def _random_bytes(folder):
    rng = np.random.default_rng(0)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            path.write_bytes(rng.bytes(max(16, path.stat().st_size)))


def _delete_state(folder):
    for path in sorted((folder / "state").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (folder / "state").rmdir()


@pytest.mark.parametrize(
    "damage",
    [pytest.param(_random_bytes, marks=pytest.mark.slow), _delete_state],
    ids=["random-bytes", "no-state"],
)
def test_damaged_newest_checkpoint_resumes_from_the_older_one_bitwise(tmp_path, damage):
    # 12 steps, checkpoints at 4 and 8; the kill after step 10 leaves both
    config = tiny_config(num_epochs=3.0, checkpoint_every_steps=4, log_every_steps=3)
    stop_after_10 = {"stop_fn": lambda step: step >= 10}
    # the reference: killed after step 10, resumed from the older checkpoint (step 4)
    reference, damaged = tmp_path / "reference", tmp_path / "damaged"
    for workdir in (reference, damaged):
        assert train_and_evaluate(config, workdir, **stop_after_10)["stopped"]
    (reference / "checkpoints/8").rename(tmp_path / "moved")
    train_and_evaluate(config, reference)

    damage(damaged / "checkpoints/8")
    with pytest.warns(UserWarning) as caught:
        summary = train_and_evaluate(config, damaged)
    messages = [str(w.message) for w in caught]
    assert any("checkpoints/8: unreadable checkpoint" in m for m in messages), messages
    assert any("moved the damaged checkpoint" in m for m in messages), messages
    assert summary["steps"] == 12
    assert (damaged / "checkpoints.damaged/8").is_dir()  # set aside, not deleted
    assert_trees_equal(restore_state(config, reference), restore_state(config, damaged))
    for name in ("metrics.jsonl",):
        assert [_stable(r) for r in read_jsonl(reference / name)] == [
            _stable(r) for r in read_jsonl(damaged / name)
        ]
    summaries = [json.loads((w / "summary.json").read_text()) for w in (reference, damaged)]
    assert _stable(summaries[0]) == _stable(summaries[1])


def test_no_readable_checkpoint_stops_with_the_folder_and_how_to_start_fresh(tmp_path):
    config = tiny_config(num_epochs=1.0, checkpoint_every_steps=2)
    train_and_evaluate(config, tmp_path, stop_fn=lambda step: step >= 3)
    _random_bytes(tmp_path / "checkpoints/2")
    with pytest.raises(ValueError, match=r"checkpoints: no readable checkpoint.*move or delete"):
        train_and_evaluate(config, tmp_path)
    assert (tmp_path / "checkpoints/2").is_dir()  # nothing moved when none is good
    (tmp_path / "checkpoints").rename(tmp_path / "old_checkpoints")
    assert train_and_evaluate(config, tmp_path)["steps"] == 4  # started afresh


def test_a_corrupted_log_line_is_dropped_with_a_warning_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2\n[3]\n{"step": 4}\n')
    with pytest.warns(UserWarning) as caught:
        records = read_jsonl(path)
    assert records == [{"step": 1}, {"step": 4}]
    assert [str(w.message).split(": ")[0] for w in caught] == [f"{path}:2", f"{path}:3"]
