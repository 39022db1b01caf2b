"""The report from synthetic results: every claim, group, figure, failure count and rule shown."""

import json

import pytest
from _synthetic import QUICK, fill

from nmelab.cli import main
from nmelab.experiments import base, load_results
from nmelab.experiments.report import build_report, write_report
from nmelab.experiments.verdicts import INCONCLUSIVE, NOT_COMPUTED, REPRODUCED


def _paper_world(line, x, panel):
    """Fig. 2: GELU gains up to ρ* = 0.3, ReLU loses; Fig. 6: SAM flat at 95 %."""
    if line.startswith("SAM"):
        return 95.0
    if "GELU" in line:
        return 95.0 + 2.0 * min(x, 0.3) / 0.3 - (5.0 if x > 0.3 else 0.0)
    return 95.0 - 8.0 * x


def _status(line, x, panel, i):
    return "diverged" if line == "penalty, ReLU" and x == 1.0 and i == 0 else "ok"


def test_report_has_every_claim_group_figure_and_verdict(tmp_path):
    fill(tmp_path, ["fig2", "fig6"], _paper_world, status_fn=_status)
    report = build_report(tmp_path, ["fig2", "fig6"], QUICK, load_results(tmp_path))
    verdicts = {c.key: c.verdict for c in report.claims}
    assert verdicts["fig2"] == verdicts["fig2-rho0"] == REPRODUCED
    assert verdicts["fig6b"] == REPRODUCED
    # the diverged ReLU seed at ρ = 1 widens fig6a's interval; without it the claim holds
    fig6a = next(c for c in report.claims if c.key == "fig6a")
    assert fig6a.verdict == INCONCLUSIVE and fig6a.sensitivity_verdict == REPRODUCED
    assert fig6a.failures_drive_result
    assert all(c.holm_verdict for c in report.claims)
    paths = write_report(report, tmp_path)
    md = paths["md"].read_text()
    for claim in report.claims:
        assert f"Claim {claim.key}" in md
    assert "primary training claims** (the headline)" in md and "after Holm" in md
    assert (tmp_path / "figures" / "fig2.png").exists()
    assert (tmp_path / "figures" / "fig6.pdf").exists()
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 2
    assert "1 diverged" in md and "drive the result" in md  # counted, not hidden
    data = json.loads(paths["json"].read_text())
    assert {c["key"] for c in data["claims"]} == set(verdicts)
    assert {c["group"] for c in data["claims"]} == {"primary"}
    fig6a = next(c for c in data["claims"] if c["key"] == "fig6a")
    assert fig6a["num_diverged"] == 1 and "verdict_without_failures" in fig6a


def test_missing_runs_are_not_computed_and_the_report_says_so(tmp_path):
    fill(tmp_path, ["fig2"], _paper_world, keep=lambda spec: "-s2-" not in spec.run_id)
    report = build_report(tmp_path, ["fig2"], QUICK, load_results(tmp_path))
    assert {c.verdict for c in report.claims} == {NOT_COMPUTED}
    md = write_report(report, tmp_path)["md"].read_text()
    assert "missing or damaged" in md and NOT_COMPUTED in md


def test_groups_keep_identities_and_our_claims_out_of_the_headline(tmp_path):
    report = build_report(
        tmp_path, ["fig1", "b4", "mechanism", "fig3"], QUICK, load_results(tmp_path)
    )
    groups = {c.key: c.group for c in report.claims}
    assert groups["fig1a"] == groups["b4a"] == groups["b4b"] == "identity"
    assert groups["mechanism"] == "ours" and groups["mechanism-rho0.1"] == "secondary"
    assert groups["fig3"] == "primary" and groups["fig3-rho0.3"] == "secondary"
    mechanism = next(c for c in report.claims if c.key == "mechanism")
    assert "ρ = 0.01" in mechanism.effect_name
    assert any("moved from ρ = 0.1 to ρ = 0.01" in n for n in mechanism.notes)


def test_every_experiment_defines_points_at_every_scale():
    from nmelab.experiments.planning import plan

    for scale in (QUICK, base.get_scale("small"), base.get_scale("paper", "/data")):
        runs = plan(base.names(), scale)
        assert len({r.spec.run_id for r in runs}) == len(runs)
        for name in base.names():
            assert base.get(name).points(scale) and base.get(name).describe(scale)
    # runs are shared: the Fig. 6 penalty lines and the SGD baselines are the Fig. 2 runs
    fig2 = {s.run_id for p in base.get("fig2").points(QUICK) for s in p.specs}
    fig6 = {
        s.run_id
        for p in base.get("fig6").points(QUICK)
        if p.line.startswith("penalty") or p.x == 0
        for s in p.specs
    }
    assert fig6 <= fig2
    with pytest.raises(ValueError, match="data_dir"):
        base.get_scale("paper")
    with pytest.raises(ValueError, match="num_seeds"):
        base.get_scale("quick", num_seeds=1)


def test_setup_text_comes_from_the_recipe():
    from nmelab.experiments import recipes

    epochs = recipes.recipe_dict(recipes.Recipe("mnist1d_cnn_bn.py", "scale=quick"))["num_epochs"]
    text = base.get("fig2").describe(QUICK)
    assert "MNIST-1D" in text and "cnn1d_bn" in text and f"{epochs:g} epochs" in text
    assert "ρ* = 0.3" in text


def test_cli_report_only_and_csv(tmp_path, capsys):
    fill(tmp_path, ["fig2"], _paper_world)
    csv = tmp_path / "all.csv"
    code = main(
        ["reproduce", "--out", str(tmp_path), "--experiments", "fig2", "--report-only",
         "--export-csv", str(csv)]
    )  # fmt: skip
    assert code == 0
    num_seeds = sum(len(p.specs) for p in base.get("fig2").points(QUICK))  # one task per seed
    assert (tmp_path / "report.html").exists()
    assert len(csv.read_text().splitlines()) == 1 + num_seeds
    assert main(["reproduce", "--out", str(tmp_path), "--experiments", "nope"]) == 2
    assert main(["reproduce", "--out", str(tmp_path), "--shard", "3/3"]) == 2
    assert "shard" in capsys.readouterr().err
