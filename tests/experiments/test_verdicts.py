"""Effects, intervals and verdict rules, on synthetic results whose answer is known."""

import math

import numpy as np
import pytest
from scipy import stats

from nmelab.experiments import verdicts
from nmelab.experiments.verdicts import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    contrast,
    difference,
    equivalence_verdict,
    holm,
    mean_interval,
    p_value,
    slope,
    verdict,
)


def judge(iv, direction, margin):
    return verdict(iv.lo, iv.hi, direction=direction, margin=margin)


def test_mean_interval_matches_scipy_t_interval():
    x = np.array([70.1, 71.3, 69.8, 72.0, 70.7])
    iv = mean_interval(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert iv.estimate == pytest.approx(x.mean())
    assert (iv.lo, iv.hi) == pytest.approx((lo, hi), rel=1e-12)


def test_difference_is_the_welch_interval():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 4), rng.normal(0.0, 3.0, 6)
    iv = difference(a, b)
    welch = stats.ttest_ind(a, b, equal_var=False)
    assert iv.estimate / iv.se == pytest.approx(welch.statistic, rel=1e-12)
    assert iv.df == pytest.approx(welch.df, rel=1e-12)
    ci = welch.confidence_interval(0.95)
    assert (iv.lo, iv.hi) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_slope_equals_ols_on_equal_groups_and_is_exact_without_noise():
    x = [0.0, 0.1, 0.3, 1.0]
    groups = [[2.0 + 3.0 * xi] * 3 for xi in x]
    iv = slope(x, groups)
    assert iv.estimate == pytest.approx(3.0) and iv.lo == iv.hi == pytest.approx(3.0)
    rng = np.random.default_rng(1)
    noisy = [list(2.0 + 3.0 * xi + rng.normal(0, 0.5, 3)) for xi in x]
    xs = np.repeat(x, 3)
    ys = np.concatenate(noisy)
    assert slope(x, noisy).estimate == pytest.approx(np.polyfit(xs, ys, 1)[0], rel=1e-12)


def test_single_seed_group_gives_infinite_interval_and_inconclusive():
    iv = contrast([[1.0, 2.0], [5.0]], [1.0, -1.0])
    assert math.isinf(iv.lo) and math.isinf(iv.hi)
    assert judge(iv, +1, 1.0) == INCONCLUSIVE


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="groups, weights"):
        contrast([[1.0]], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        mean_interval([1.0, math.nan])
    with pytest.raises(ValueError, match="direction"):
        judge(mean_interval([1.0, 2.0]), 2, 1.0)
    with pytest.raises(ValueError, match="margin"):
        judge(mean_interval([1.0, 2.0]), 1, 0.0)
    with pytest.raises(ValueError, match="margin"):
        equivalence_verdict(-1.0, 1.0, margin=-1.0)
    with pytest.raises(ValueError, match="lo, hi"):
        verdict(math.nan, 1.0, direction=1, margin=1.0)
    with pytest.raises(ValueError, match="lo, hi"):
        verdict(2.0, 1.0, direction=1, margin=1.0)
    with pytest.raises(ValueError, match="x"):
        verdicts.slope_weights([1.0, 1.0])


def _seeds(rng, mean, n=5, sd=0.5):
    return rng.normal(mean, sd, n)


def test_verdicts_on_synthetic_grids_with_known_answers():
    """Fig. 2-like grid: the GELU-minus-ReLU slope difference; answers fixed by construction."""
    rng = np.random.default_rng(2)
    rhos = [0.0, 0.1, 0.3, 1.0]
    w = verdicts.slope_weights(rhos).tolist()

    def effect(gelu_slope, relu_slope, sd=0.5):
        gelu = [_seeds(rng, 90 + gelu_slope * r, sd=sd) for r in rhos]
        relu = [_seeds(rng, 90 + relu_slope * r, sd=sd) for r in rhos]
        return contrast(gelu + relu, w + [-x for x in w])

    margin = 1.0
    assert judge(effect(+8.0, -8.0), +1, margin) == REPRODUCED  # the paper's effect, clearly
    assert judge(effect(-8.0, +8.0), +1, margin) == NOT_REPRODUCED  # clearly the opposite
    assert judge(effect(0.0, 0.0, sd=0.01), +1, margin) == NOT_REPRODUCED  # precisely nothing
    assert judge(effect(1.0, 0.0, sd=6.0), +1, margin) == INCONCLUSIVE  # too noisy to tell


@pytest.mark.parametrize(
    ("lo", "hi", "direction", "expected"),
    [
        (0.5, 3.5, +1, REPRODUCED),  # excludes 0 on the paper's side, reaches the margin
        (1.0, 1.0, +1, REPRODUCED),  # exactly at the margin (exact value)
        (0.2, 0.8, +1, NOT_REPRODUCED),  # inside (0, margin): below the smallest effect
        (0.0, 0.0, +1, NOT_REPRODUCED),  # exactly at 0
        (-3.5, -0.5, +1, NOT_REPRODUCED),  # excludes 0 on the other side
        (-0.5, 0.8, +1, NOT_REPRODUCED),  # both sides, but rules out the margin
        (-1.0, 2.0, +1, INCONCLUSIVE),  # both sides, reaches the margin
        (0.0, 2.0, +1, INCONCLUSIVE),  # touches 0: does not exclude it
        (-math.inf, math.inf, +1, INCONCLUSIVE),  # infinite bounds (one seed)
        (0.5, math.inf, +1, REPRODUCED),  # infinite upper bound on the paper's side
        (-math.inf, -0.5, +1, NOT_REPRODUCED),
        (-3.5, -0.5, -1, REPRODUCED),  # paper predicts < 0
        (0.5, 3.5, -1, NOT_REPRODUCED),
        (-0.8, -0.2, -1, NOT_REPRODUCED),  # inside (−margin, 0)
        (-math.inf, math.inf, -1, INCONCLUSIVE),
    ],
)
def test_verdict_truth_table(lo, hi, direction, expected):
    assert verdict(lo, hi, direction=direction, margin=1.0) == expected


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (-0.4, 0.6, REPRODUCED),  # inside ±margin
        (0.0, 0.0, REPRODUCED),  # exactly 0
        (0.2, 0.8, REPRODUCED),  # inside (0, margin) is "similar"
        (1.5, 4.5, NOT_REPRODUCED),  # entirely above the margin
        (-4.5, -1.5, NOT_REPRODUCED),  # entirely below −margin
        (-0.2, 1.8, INCONCLUSIVE),  # straddles the margin
        (-2.0, 2.0, INCONCLUSIVE),  # both sides, wider than the margin
        (-math.inf, math.inf, INCONCLUSIVE),  # infinite bounds
        (1.5, math.inf, NOT_REPRODUCED),
    ],
)
def test_equivalence_verdict_truth_table(lo, hi, expected):
    assert equivalence_verdict(lo, hi, margin=1.0) == expected


def test_p_values_agree_with_the_intervals_and_holm_is_step_down():
    rng = np.random.default_rng(4)
    for _ in range(20):
        iv = contrast([rng.normal(1, 1, 4), rng.normal(0, 1, 4)], [1.0, -1.0])
        assert (p_value(iv, direction=+1, margin=1.0) < 0.025) == (iv.lo > 0)
        tost = p_value(iv, direction=0, margin=1.0) < 0.025
        assert tost == (-1.0 < iv.lo and iv.hi < 1.0)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([]) == []


def test_coverage_of_the_interval_is_about_95_percent():
    """Over many synthetic experiments the interval covers the true contrast ~95 % of the time."""
    rng = np.random.default_rng(3)
    trials, covered = 2000, 0
    for _ in range(trials):
        a, b = rng.normal(1.0, 1.0, 3), rng.normal(0.0, 2.0, 3)
        iv = difference(a, b)
        covered += iv.lo <= 1.0 <= iv.hi
    rate = covered / trials
    stderr = math.sqrt(0.95 * 0.05 / trials)
    # Welch-Satterthwaite is slightly conservative or liberal at n = 3; allow 4 stderr + 1 %.
    assert abs(rate - 0.95) < 4 * stderr + 0.01
