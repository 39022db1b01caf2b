"""App. B.4 on a few directions: closed form, simulation, agreement and parting."""

import numpy as np
import pytest

from nmelab.experiments import b4_pusam as b4


def test_eq51_expansion_of_two_penalty_steps():
    x = np.linspace(-0.5, 1.5, 41)
    assert (1 - x - x**2 / 2) ** 2 == pytest.approx(1 - 2 * x + x**3 + x**4 / 4, abs=1e-12)


def test_simulation_matches_closed_form_per_direction():
    eta, t = 0.1, 6
    x = np.array([1e-3, 0.01, 0.1, 0.5, 1.0, 1.2])
    sim = b4.simulate(x / eta, eta, t, seed=1)
    closed = b4.closed_form(x, t)
    assert sim["pusam"][-1] / sim["theta0"] == pytest.approx(closed["pusam"], abs=1e-12)
    assert sim["gd_2eta"][-1] / sim["theta0"] == pytest.approx(closed["gd_2eta"], abs=1e-12)
    assert np.max(np.abs(sim["usam"] - sim["pusam"])) < 1e-12  # USAM == penalty on a quadratic


def test_agree_for_small_eta_lambda_and_part_at_order_one():
    t = 20
    small = b4.closed_form(np.array([1e-3, 1e-2]), t)["relative_gap"]
    # leading order: the per-pair factors differ by x³ + x⁴/4, so the gap is about t·x³
    assert small == pytest.approx(t * np.array([1e-3, 1e-2]) ** 3, rel=0.05)
    big = b4.closed_form(np.array([0.5, 1.0, 1.1]), t)
    assert np.all(big["relative_gap"] > 0.9)
    assert big["gd_2eta"][1] == pytest.approx(1.0)  # (1 − 2)^20: GD at 2η oscillates, no decay
    assert abs(big["gd_2eta"][2]) > 1.0 > abs(big["pusam"][2])  # GD 2η diverges, penalty not


def test_run_summary_and_bad_t(tmp_path):
    config = {**b4.default_config(), "num_directions": 5, "resolution": 20}
    summary = b4.run(config, str(tmp_path))
    assert summary["simulation_max_abs_error"] < 1e-10
    assert summary["relative_gap"]["0.01"] < 1e-3 < 0.5 < summary["relative_gap"]["0.5"]
    assert "closed_pusam" in b4.load(tmp_path)
    with pytest.raises(ValueError, match="t"):
        b4.closed_form(0.1, 0)
