"""Damaged sweep artifacts: validated on read, set aside (kept), recomputed; never "reproduced"."""

import json

import numpy as np
import pytest
from _synthetic import QUICK

from nmelab._io import write_json_atomic
from nmelab.cli import main
from nmelab.experiments import base, pipeline
from nmelab.experiments.report import INVOCATIONS_FILE, build_report
from nmelab.experiments.results import load_results
from nmelab.experiments.sweep import DAMAGED_DIR, RESULT_FILE, run_dir
from nmelab.experiments.verdicts import NOT_COMPUTED, REPRODUCED


def _only_spec(name):
    (point,) = base.get(name).points(QUICK)
    (spec,) = point.specs
    return spec


def test_a_result_with_a_bad_summary_is_set_aside_and_recomputed(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path), "--experiments", "b4", "--workers", "1"]) == 0
    spec = _only_spec("b4")
    record = json.loads((run_dir(tmp_path, spec) / RESULT_FILE).read_text())
    write_json_atomic(run_dir(tmp_path, spec) / RESULT_FILE, {**record, "summary": 5})
    (tmp_path / INVOCATIONS_FILE).write_text("{}\nnot json\n")
    with pytest.warns(UserWarning) as caught:
        code = main(["reproduce", "--out", str(tmp_path), "--experiments", "b4", "--workers", "1"])
    assert code == 0
    messages = [str(w.message) for w in caught]
    assert any("damaged run record" in m and str(spec.run_id) in m for m in messages)
    assert any("invocations.jsonl:1: skipped" in m for m in messages)  # the {} line
    assert any("invocations.jsonl:2: skipped" in m for m in messages)
    assert (tmp_path / DAMAGED_DIR / f"{spec.run_id}.0" / RESULT_FILE).exists()  # kept, not lost
    out = capsys.readouterr().out
    assert "1 run now" in out
    claims = json.loads((tmp_path / "claims.json").read_text())["claims"]
    assert {c["verdict"] for c in claims} == {REPRODUCED}


@pytest.mark.parametrize(
    ("name", "archive_name", "key"),
    [
        ("b4", "b4.npz", "closed_pusam"),
        pytest.param("fig1", "landscape.npz", "a_values", marks=pytest.mark.slow),
    ],
)
def test_a_corrupted_archive_never_yields_reproduced(tmp_path, name, archive_name, key):
    spec = _only_spec(name)
    pipeline.reproduce("quick", [name], tmp_path, workers=1, console=_quiet())
    archive = run_dir(tmp_path, spec) / archive_name
    archive.write_bytes(b"PK\x03\x04 corrupted" + bytes(64))
    with pytest.warns(UserWarning, match=archive_name):
        report = build_report(tmp_path, [name], QUICK, load_results(tmp_path))
    assert {c.verdict for c in report.claims} == {NOT_COMPUTED}
    # the next run sets it aside (kept) and recomputes it
    with pytest.warns(UserWarning, match=archive_name):
        result = pipeline.reproduce("quick", [name], tmp_path, workers=1, console=_quiet())
    assert result["sweep"].completed == 1
    assert {c.verdict for c in result["claims"]} == {REPRODUCED}
    assert np.load(archive)[key].size
    assert (tmp_path / DAMAGED_DIR / f"{spec.run_id}.0" / archive_name).exists()


def _quiet():
    from rich.console import Console

    return Console(quiet=True)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--threads", "-1"], "--threads"),
        (["--workers", "0"], "--workers"),
        (["--scale", "paper", "--data-dir", "/nonexistent/h12"], "--data-dir"),
        (["--scale", "paper"], "--data-dir"),
        (["--json"], "--json"),
    ],
)
def test_cli_mistakes_exit_2_with_one_line(tmp_path, capsys, args, flag):
    out = tmp_path / "out"
    assert main(["reproduce", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # checked before any work: no run folders left behind


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["reproduce", "--out", str(a_file), "--experiments", "b4"]) == 2
    assert "--out" in capsys.readouterr().err
    out = tmp_path / "out"
    csv = a_file / "rows.csv"
    assert (
        main(["reproduce", "--out", str(out), "--experiments", "b4", "--export-csv", str(csv)]) == 2
    )
    err = capsys.readouterr().err
    assert "--export-csv" in err and str(a_file) in err and not out.exists()
