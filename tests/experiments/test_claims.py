"""Each claim's test on synthetic results whose verdict is known; failures shown, Holm applied."""

import pytest
from _synthetic import QUICK, fill

from nmelab.experiments import base
from nmelab.experiments.claims import points_table
from nmelab.experiments.results import load_results
from nmelab.experiments.verdicts import (
    INCONCLUSIVE,
    NOT_COMPUTED,
    NOT_REPRODUCED,
    REPRODUCED,
)


def _claims(root, name):
    table = points_table(base.get(name).points(QUICK), load_results(root))
    return {c.key: c for c in base.get(name).claims(table, QUICK, root)}


def _fig2_world(gelu_fn, relu_fn):
    def accuracy(line, x, panel):
        return gelu_fn(x) if "GELU" in line else relu_fn(x)

    return accuracy


def test_fig2_gelu_rises_to_rho_star_then_falls_is_reproduced(tmp_path):
    # GELU: up 2 points to ρ* = 0.3, then down at ρ = 1 (a least-squares slope would call
    # this a decline); ReLU falls.
    gelu = {0.0: 95.0, 0.1: 96.0, 0.3: 97.0, 1.0: 80.0}
    relu = {0.0: 95.0, 0.1: 93.0, 0.3: 90.0, 1.0: 60.0}
    fill(tmp_path, ["fig2"], _fig2_world(gelu.get, relu.get))
    claims = _claims(tmp_path, "fig2")
    assert claims["fig2"].verdict == REPRODUCED
    assert claims["fig2-rho0"].verdict == REPRODUCED  # similar at ρ = 0 (equivalence)
    slope = dict(claims["fig2"].details)["OLS slope over the grid, GELU"]
    assert slope.hi < 0  # the slope rule would have said "GELU falls"


def test_fig2_gelu_falling_slower_than_relu_is_not_reproduced(tmp_path):
    gelu = {0.0: 95.0, 0.1: 94.0, 0.3: 92.0, 1.0: 88.0}  # falls, just more slowly
    relu = {0.0: 95.0, 0.1: 92.0, 0.3: 87.0, 1.0: 70.0}
    fill(tmp_path, ["fig2"], _fig2_world(gelu.get, relu.get))
    claim = _claims(tmp_path, "fig2")["fig2"]
    assert claim.effect.lo > 1.0  # the difference of gains alone favours GELU
    assert claim.verdict == NOT_REPRODUCED  # but GELU does not gain: a required part fails


def test_fig2_different_at_rho0_fails_the_equivalence_claim(tmp_path):
    fill(tmp_path, ["fig2"], lambda line, x, panel: 96.0 if "GELU" in line else 92.0)
    assert _claims(tmp_path, "fig2")["fig2-rho0"].verdict == NOT_REPRODUCED


def test_failures_are_counted_and_a_sensitivity_verdict_says_when_they_drive_it(tmp_path):
    # GELU gains 2 points; ReLU does not lose in generalisation but one seed diverges at ρ*.
    def status(line, x, panel, i):
        return "diverged" if "ReLU" in line and x == 0.3 and i == 0 else "ok"

    def accuracy(line, x, panel):
        return 95.0 + (2.0 if "GELU" in line and x == 0.3 else 0.0)

    fill(tmp_path, ["fig2"], accuracy, status_fn=status, sd=0.05)
    claim = _claims(tmp_path, "fig2")["fig2"]
    assert claim.measured.num_diverged == 1 and claim.measured.num_collapsed == 0
    assert claim.verdict != claim.sensitivity_verdict == NOT_REPRODUCED
    assert claim.failures_drive_result
    assert any("drive this result" in n for n in claim.notes)


def test_fig3_claims(tmp_path):
    def accuracy(line, x, panel):
        if "ReLU" in line:
            return 72.0
        if line.startswith("SGD"):
            return 71.0  # flat in β
        return 74.0 - 2.0 * (x - 1.0) ** 0.5  # the penalty line falls with β

    fill(tmp_path, ["fig3"], accuracy)
    claims = _claims(tmp_path, "fig3")
    assert claims["fig3"].verdict == REPRODUCED
    assert claims["fig3-sgd"].verdict == REPRODUCED  # "unaffected for SGD"
    assert claims["fig3-relu"].verdict == REPRODUCED  # large β does worse than ReLU
    assert claims["fig3"].group == "primary" and claims["fig3-relu"].group == "secondary"
    assert claims["fig3-rho0.3"].group == "secondary"


def test_fig4_nearly_matches_and_similar_to_are_equivalence_claims(tmp_path):
    def accuracy(line, x, panel):
        if "augmented" in line or "GELU" in line and "diminished" not in line:
            return 95.0
        return 90.0  # ReLU and diminished GELU

    fill(tmp_path, ["fig4"], accuracy)
    claims = _claims(tmp_path, "fig4")
    for key in ("fig4a", "fig4a-gelu", "fig4b", "fig4b-relu"):
        assert claims[key].verdict == REPRODUCED, key
    assert claims["fig4a-gelu"].direction == claims["fig4b-relu"].direction == 0


def test_fig6_claims_and_missing_runs_are_not_computed(tmp_path):
    def accuracy(line, x, panel):
        if line.startswith("SAM"):
            return 95.0
        return 95.0 - (10.0 * x if "ReLU" in line else 0.0)

    fill(tmp_path, ["fig6"], accuracy, keep=lambda spec: "sam-rho1" not in spec.run_id)
    claims = _claims(tmp_path, "fig6")
    assert {c.verdict for c in claims.values()} == {NOT_COMPUTED}  # the SAM ρ = 1 runs are missing
    fill(tmp_path, ["fig6"], accuracy)
    claims = _claims(tmp_path, "fig6")
    assert claims["fig6a"].verdict == REPRODUCED
    assert claims["fig6b"].verdict == REPRODUCED and claims["fig6c"].verdict == REPRODUCED


def test_fig5_claims(tmp_path):
    def accuracy(line, x, panel):
        return 75.0 if "GN" in line and x > 0 else 70.0

    fill(tmp_path, ["fig5"], accuracy)
    claims = _claims(tmp_path, "fig5")
    assert claims["fig5a"].verdict == claims["fig5b"].verdict == REPRODUCED


def test_no_results_are_not_computed(tmp_path):
    for name in ("fig2", "fig3", "fig1", "b4", "mechanism"):
        table = points_table(base.get(name).points(QUICK), load_results(tmp_path))
        claims = base.get(name).claims(table, QUICK, tmp_path)
        assert claims and {c.verdict for c in claims} == {NOT_COMPUTED}, name


@pytest.mark.parametrize("noise", [6.0])
def test_noisy_world_is_inconclusive(tmp_path, noise):
    fill(tmp_path, ["fig5"], lambda line, x, panel: 70.0, sd=noise)
    claims = _claims(tmp_path, "fig5")
    assert INCONCLUSIVE in {c.verdict for c in claims.values()}
