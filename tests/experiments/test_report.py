"""The report from synthetic results whose verdicts are known: every claim, figure and rule shown."""

import json

import numpy as np
import pytest

from nmelab.cli import main
from nmelab.experiments import load_results, registry
from nmelab.experiments.report import build_report, write_report
from nmelab.experiments.sweep import RESULT_FILE, run_dir, write_json_atomic
from nmelab.experiments.verdicts import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

SCALE = registry.get_scale("quick")


def _accuracy(line, x, rng):
    """The paper's world for Fig. 2 (GELU up, ReLU down), Fig. 6 SAM flat at 95 %."""
    if line.startswith("penalty, GELU"):
        mean = 95 + 3 * x
    elif line.startswith("penalty, ReLU"):
        mean = 95 - 10 * x
    elif line.startswith("SAM"):
        return 95.0 + rng.normal(0, 0.1)  # CI half-width ~0.25 ≪ the 1-point margin
    else:
        mean = 90.0
    return float(np.clip(mean + rng.normal(0, 0.3), 0, 100))


def _fill(root, names, rng):
    for name in names:
        for point in registry.get(name).points(SCALE):
            for spec in point.specs:
                path = run_dir(root, spec) / RESULT_FILE
                if path.exists():
                    continue
                n = spec.config["num_seeds"]
                acc = [_accuracy(point.line, point.x, rng) / 100 for _ in range(n)]
                status = ["ok"] * n
                if point.line.startswith("penalty, ReLU") and point.x == 1.0:
                    status[0], acc[0] = "diverged", None  # scored at chance
                summary = {
                    "seeds": [spec.config["seed"] + i for i in range(n)],
                    "status": status,
                    "diverged_step": [None] * n,
                    "test_accuracy": acc,
                    "test_loss": [0.1] * n,
                    "train_accuracy": [1.0] * n,
                    "train_loss": [0.0] * n,
                    "num_classes": 10,
                }
                write_json_atomic(path, {**spec.to_json(), "summary": summary, "elapsed_s": 1.0})


def test_report_has_every_claim_figure_and_verdict(tmp_path):
    _fill(tmp_path, ["fig2", "fig6"], np.random.default_rng(0))
    results = load_results(tmp_path)
    report = build_report(tmp_path, ["fig2", "fig6"], SCALE, results)
    verdicts = {c.key: c.verdict for c in report.claims}
    assert verdicts["fig2"] == REPRODUCED
    assert verdicts["fig6a"] == REPRODUCED  # SAM − PSAM much larger for ReLU
    assert verdicts["fig6b"] == REPRODUCED  # SAM flat across activations
    paths = write_report(report, tmp_path)
    md = paths["md"].read_text()
    for claim in report.claims:
        assert f"Claim {claim.key}" in md
    assert "![" in md and (tmp_path / "figures" / "fig2.png").exists()
    assert (tmp_path / "figures" / "fig6.pdf").exists()
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 2 and "<img" in html
    assert "diverged" in md  # the diverged seeds are counted, not hidden
    data = json.loads(paths["json"].read_text())
    assert {c["key"] for c in data["claims"]} == set(verdicts)


def test_opposite_and_missing_results_are_reported_not_hidden(tmp_path):
    rng = np.random.default_rng(1)
    for point in registry.get("fig2").points(SCALE):
        for spec in point.specs[:2]:  # a third of the seeds never ran
            # the opposite world: the penalty helps ReLU and hurts GELU
            sign = -1 if "GELU" in point.line else 1
            acc = (95 + sign * 5 * point.x + rng.normal(0, 0.2)) / 100
            summary = {
                "seeds": [spec.config["seed"]],
                "status": ["ok"],
                "test_accuracy": [acc],
                "test_loss": [0.1],
                "train_accuracy": [1.0],
                "num_classes": 10,
            }
            write_json_atomic(
                run_dir(tmp_path, spec) / RESULT_FILE,
                {**spec.to_json(), "summary": summary, "elapsed_s": 1.0},
            )
    report = build_report(tmp_path, ["fig2"], SCALE, load_results(tmp_path))
    (claim,) = report.claims
    assert claim.verdict == NOT_REPRODUCED
    assert any("no result" in n for n in claim.notes)
    md = write_report(report, tmp_path)["md"].read_text()
    assert "missing" in md and NOT_REPRODUCED in md


def test_no_results_gives_inconclusive_claims(tmp_path):
    report = build_report(tmp_path, ["fig3"], SCALE, load_results(tmp_path))
    assert {c.verdict for c in report.claims} == {INCONCLUSIVE}


def test_every_experiment_defines_points_at_every_scale():
    for scale in (SCALE, registry.get_scale("small"), registry.get_scale("paper", "/data")):
        tasks = registry.tasks_for(registry.EXPERIMENT_NAMES, scale)
        assert len({t.run_id for t in tasks}) == len(tasks)
        for name in registry.EXPERIMENT_NAMES:
            exp = registry.get(name)
            assert exp.points(scale) and exp.describe(scale)
    # runs are shared: the Fig. 6 penalty lines are the Fig. 2 runs
    fig2 = {s.run_id for p in registry.get("fig2").points(SCALE) for s in p.specs}
    fig6 = {
        s.run_id
        for p in registry.get("fig6").points(SCALE)
        if p.line.startswith("penalty")
        for s in p.specs
    }
    assert fig6 <= fig2
    with pytest.raises(ValueError, match="data_dir"):
        registry.get_scale("paper")
    with pytest.raises(ValueError, match="num_seeds"):
        registry.get_scale("quick", num_seeds=1)


def test_cli_report_only_and_csv(tmp_path, capsys):
    _fill(tmp_path, ["fig2"], np.random.default_rng(2))
    csv = tmp_path / "all.csv"
    code = main(
        [
            "reproduce",
            "--out",
            str(tmp_path),
            "--experiments",
            "fig2",
            "--report-only",
            "--export-csv",
            str(csv),
        ]
    )
    assert code == 0
    assert (tmp_path / "report.html").exists() and len(csv.read_text().splitlines()) == 25
    assert main(["reproduce", "--out", str(tmp_path), "--experiments", "nope"]) == 2
    assert main(["reproduce", "--out", str(tmp_path), "--shard", "3/3"]) == 2
    assert "shard" in capsys.readouterr().err
