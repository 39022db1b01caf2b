"""publish copies one reproduction (no run folders); compare_claims pairs two sets of verdicts."""

import json

import pytest

from nmelab.cli import main
from nmelab.experiments import compare_claims, load_results, publish


def _claim(key, verdict, estimate=1.0, group="primary"):
    effect = {"estimate": estimate, "lo": estimate - 1, "hi": estimate + 1}
    return {"key": key, "group": group, "verdict": verdict, "effect": effect, "unit": "points"}


def _out(root, claims, figures=("figures/fig2.png",)):
    (root / "figures").mkdir(parents=True)
    (root / "runs").mkdir()
    for png in figures:
        (root / png).write_bytes(b"\x89PNG fake " + png.encode())
    (root / "report.md").write_text("# report\n")
    payload = {"scale": "quick", "num_seeds": 3, "experiments": ["fig2"], "claims": claims,
               "figures": {"fig2": list(figures)}}  # fmt: skip
    (root / "claims.json").write_text(json.dumps(payload))
    return root


def test_publish_copies_report_figures_claims_and_csv_but_no_runs(tmp_path):
    out = _out(tmp_path / "out", [_claim("fig2", "reproduced")])
    dest = tmp_path / "docs" / "results" / "quick"
    (dest / "figures").mkdir(parents=True)
    (dest / "figures" / "stale.png").write_bytes(b"old")
    written = publish(out, dest)
    names = sorted(str(p.relative_to(dest)) for p in written)
    assert names == ["claims.json", "figures/fig2.png", "report.md", "results.csv"]
    assert not (dest / "figures" / "stale.png").exists() and not (dest / "runs").exists()
    assert (dest / "figures" / "fig2.png").read_bytes() == (
        out / "figures" / "fig2.png"
    ).read_bytes()
    assert len(load_results(dest / "results.csv")) == 0


def test_publish_refuses_an_unfinished_out_and_itself(tmp_path):
    with pytest.raises(ValueError, match="out: .*report.md.* is missing"):
        publish(tmp_path, tmp_path / "dest")
    out = _out(tmp_path / "out", [])
    with pytest.raises(ValueError, match="dest: expected a folder other than out"):
        publish(out, out)


def test_compare_claims_marks_changed_and_absent_claims(tmp_path):
    old = _out(tmp_path / "old", [_claim("fig2", "reproduced"), _claim("fig3", "inconclusive")])
    new = _out(tmp_path / "new", [_claim("fig2", "not reproduced", -2.0), _claim("fig9", "x")])
    rows = {r.key: r for r in compare_claims(old, new / "claims.json")}
    assert list(rows) == ["fig2", "fig3", "fig9"]
    assert rows["fig2"].changed and rows["fig2"].new_effect == "-2 [-3, -1] points"
    assert (rows["fig3"].new, rows["fig9"].published) == ("absent", "absent")
    with pytest.raises(ValueError, match="new: .*nowhere' not found"):
        compare_claims(old, tmp_path / "nowhere")


def test_cli_compare_prints_both_verdicts(tmp_path, capsys):
    old = _out(tmp_path / "old", [_claim("fig2", "reproduced")])
    new = _out(tmp_path / "new", [_claim("fig2", "not reproduced")])
    assert main(["reproduce", "--compare", str(old), str(new)]) == 0
    text = capsys.readouterr().out
    assert "changed" in text and "1 of 1 verdicts changed" in text
    assert main(["reproduce", "--compare", str(old), str(tmp_path / "nowhere")]) == 2
    assert "--compare new:" in capsys.readouterr().err
