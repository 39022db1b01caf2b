"""The mechanism's claims from synthetic curvature records (the trainer's schema) with known answers."""

import json

import pytest
from _synthetic import QUICK, fill

from nmelab.experiments import base
from nmelab.experiments.claims import points_table
from nmelab.experiments.mechanism import FIDELITY_RHOS, PRIMARY_RHO, report_sections
from nmelab.experiments.results import load_results
from nmelab.experiments.sweep import run_dir
from nmelab.experiments.verdicts import NOT_COMPUTED, NOT_REPRODUCED, REPRODUCED
from nmelab.train import tracking


def _record(step, cosines, num_seeds=3):
    record = {"step": step, "epoch": step / 31, "fidelity_rhos": list(FIDELITY_RHOS),
              "diverged": [False] * num_seeds}  # fmt: skip
    for predictor in tracking.FIDELITY_PREDICTORS:
        for metric in tracking.FIDELITY_METRICS:
            record[tracking.fidelity_key(predictor, metric)] = [
                [cosines(rho) + 0.001 * s for rho in FIDELITY_RHOS] for s in range(num_seeds)
            ]
    tracking.check_fidelity_record(record)  # what the trainer writes, by the one schema
    return record


def _write_records(root, cosine_fn):
    for point in base.get("mechanism").points(QUICK):
        for spec in point.specs:
            path = run_dir(root, spec) / tracking.CURVATURE_FILE
            lines = [
                _record(step, lambda rho, p=point: cosine_fn(p.line, rho)) for step in (0, 155, 620)
            ]
            path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def _claims(root):
    table = points_table(base.get("mechanism").points(QUICK), load_results(root))
    return table, {c.key: c for c in base.get("mechanism").claims(table, QUICK, root)}


def test_pilot_like_cosines_reproduce_at_the_primary_point(tmp_path):
    fill(tmp_path, ["mechanism"], lambda line, x, panel: 70.0)

    def cosine(line, rho):  # ReLU: 0.53 at ρ = 0.01, 0.86 at 0.1 (the pilot's shape)
        if line == "ReLU":
            return {0.003: 0.5, 0.01: 0.53, 0.03: 0.7, 0.1: 0.86, 0.3: 0.9}[rho]
        return 0.99

    _write_records(tmp_path, cosine)
    table, claims = _claims(tmp_path)
    assert claims["mechanism"].verdict == REPRODUCED and claims["mechanism"].group == "ours"
    assert f"ρ = {PRIMARY_RHO:g}" in claims["mechanism"].effect_name
    assert claims["mechanism-rho0.1"].verdict == REPRODUCED
    assert claims["mechanism-rho0.1"].group == "secondary"
    text = " ".join(b.text for b in report_sections(table, QUICK, tmp_path))
    assert "the premise holds" in text


def test_equal_cosines_are_not_reproduced_and_bad_records_are_not_computed(tmp_path):
    fill(tmp_path, ["mechanism"], lambda line, x, panel: 70.0)
    _write_records(tmp_path, lambda line, rho: 0.95)
    assert _claims(tmp_path)[1]["mechanism"].verdict == NOT_REPRODUCED
    relu = next(p for p in base.get("mechanism").points(QUICK) if p.line == "ReLU")
    path = run_dir(tmp_path, relu.specs[0]) / tracking.CURVATURE_FILE
    record = json.loads(path.read_text().splitlines()[-1])
    del record[tracking.fidelity_key("hessian", "cosine")]
    path.write_text(path.read_text() + json.dumps(record) + "\n")
    with pytest.warns(UserWarning, match="fidelity_hessian_cosine"):
        claims = _claims(tmp_path)[1]
    assert claims["mechanism"].verdict == NOT_COMPUTED
