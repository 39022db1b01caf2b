"""Effects with confidence intervals, and the explicit rules that turn them into verdicts.

Every effect in the report is a *linear contrast of group means*: ``E = Σ_g w_g · mean(y_g)``,
where a group ``g`` is one grid point (one method, activation and ρ, β or σ²) and ``y_g`` its
per-seed test accuracies. Differences (``w = +1, −1``), differences of differences
(interactions) and least-squares slopes over a grid (``w_g = (x_g − x̄) / Σ (x_h − x̄)²``, the
OLS slope of the group means) are all of this form. The groups are independent runs, so

    SE(E)² = Σ_g w_g² s_g² / n_g

with ``s_g`` the sample standard deviation of group ``g``; the 95 % interval is ``E ± t · SE``
with the Welch–Satterthwaite degrees of freedom ``ν = SE⁴ / Σ_g (w_g² s_g² / n_g)² / (n_g − 1)``.
This allows every group its own variance, which matters here: a grid point where some seeds
collapse to chance has a far larger spread than one where none do. The trap: a group with fewer
than 2 seeds has no variance estimate; the interval is then infinite and the verdict
"inconclusive". A contrast whose groups all have zero spread has a zero-width interval.

Verdict rules (:func:`verdict`), for a claim that predicts an effect of sign ``direction`` and a
*smallest effect of interest* ``margin`` > 0 (stated per claim in the report):

* **reproduced**: the interval excludes 0 on the paper's side *and* does not lie entirely below
  ``margin``;
* **not reproduced**: the interval excludes 0 on the *opposite* side, or it lies entirely below
  ``margin`` on the paper's side (the data rule out an effect as large as the smallest one that
  would matter - also when the whole interval is inside ``(0, margin)``);
* **inconclusive at this scale**: otherwise (the interval contains 0 and reaches ``margin``).

Claims of *no* difference (the paper's "≈", e.g. "SAM is insensitive to the activation") use
:func:`equivalence_verdict`: reproduced if the interval lies inside ``(−margin, margin)``, not
reproduced if it lies entirely outside ``[−margin, margin]``, inconclusive otherwise.

A claim whose runs are missing or whose stored artifact is damaged gets :data:`NOT_COMPUTED`
(decided by the claim, before either rule is applied). Several claims tested together are
corrected by Holm's method (:func:`holm` on :func:`p_value`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "INCONCLUSIVE",
    "NOT_REPRODUCED",
    "REPRODUCED",
    "Interval",
    "contrast",
    "difference",
    "exact",
    "NOT_COMPUTED",
    "equivalence_verdict",
    "holm",
    "mean_interval",
    "p_value",
    "slope",
    "verdict",
]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive at this scale"
NOT_COMPUTED = "not computed"


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided confidence interval.

    Attributes:
      estimate: the point estimate.
      lo, hi: the interval (``±inf`` when it cannot be estimated).
      se: the standard error.
      df: the degrees of freedom of the t quantile (``inf`` if the spread is exactly 0).
      n: the number of observations behind it.
      level: the confidence level, e.g. 0.95.
    """

    estimate: float
    lo: float
    hi: float
    se: float
    df: float
    n: int
    level: float = 0.95

    @property
    def half_width(self) -> float:
        """Half the width of the interval."""
        return (self.hi - self.lo) / 2

    def scaled(self, factor: float) -> Interval:
        """The interval of ``factor · E`` (the bounds swap for a negative factor)."""
        lo, hi = sorted((self.lo * factor, self.hi * factor))
        return dataclasses.replace(
            self, estimate=self.estimate * factor, lo=lo, hi=hi, se=self.se * abs(factor)
        )

    def format(self, digits: int = 2, unit: str = "") -> str:
        """``"+1.23 [0.45, 2.01]"``; ``"n/a"`` for a NaN estimate."""
        if not math.isfinite(self.estimate):
            return "n/a"
        lo = f"{self.lo:+.{digits}f}" if math.isfinite(self.lo) else "-inf"
        hi = f"{self.hi:+.{digits}f}" if math.isfinite(self.hi) else "+inf"
        return f"{self.estimate:+.{digits}f}{unit} [{lo}, {hi}]"

    def to_dict(self) -> dict[str, float]:
        """The fields as a dict (JSON-friendly)."""
        return dataclasses.asdict(self)


def exact(value: float) -> Interval:
    """An exactly computed value (no sampling): a zero-width interval with ``se = 0``."""
    return Interval(value, value, value, 0.0, math.inf, 1)


def _clean(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if np.isnan(arr).any():
        raise ValueError(
            f"{name}: expected finite values (score diverged runs explicitly before computing "
            f"intervals), got {int(np.isnan(arr).sum())} NaN of {arr.size}"
        )
    return arr


def contrast(
    groups: Sequence[Sequence[float]], weights: Sequence[float], level: float = 0.95
) -> Interval:
    """The linear contrast ``Σ w_g · mean(groups[g])`` with a Welch–Satterthwaite t-interval.

    Args:
      groups: per-group observations (e.g. per-seed accuracies of one grid point).
      weights: one weight per group.
      level: confidence level in (0, 1).

    Returns:
      An :class:`Interval`; infinite bounds if a group with non-zero weight has < 2 values.

    Raises:
      ValueError: mismatched lengths, an empty group with non-zero weight, NaN values, or a
        ``level`` outside (0, 1).
    """
    if len(groups) != len(weights):
        raise ValueError(
            f"groups, weights: expected the same length, got {len(groups)} and {len(weights)}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    estimate, var, dof_denominator, n_total, unknown = 0.0, 0.0, 0.0, 0, False
    for i, (values, weight) in enumerate(zip(groups, weights, strict=True)):
        if weight == 0:
            continue
        arr = _clean(values, f"groups[{i}]")
        if arr.size == 0:
            raise ValueError(f"groups[{i}]: expected at least one value for weight {weight}")
        n_total += arr.size
        estimate += weight * arr.mean()
        if arr.size < 2:
            unknown = True
            continue
        term = weight**2 * arr.var(ddof=1) / arr.size
        var += term
        dof_denominator += term**2 / (arr.size - 1)
    if unknown:
        return Interval(estimate, -math.inf, math.inf, math.inf, 0.0, n_total, level)
    se = math.sqrt(var)
    if se == 0.0:
        return Interval(estimate, estimate, estimate, 0.0, math.inf, n_total, level)
    df = var**2 / dof_denominator
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return Interval(estimate, estimate - half, estimate + half, se, df, n_total, level)


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of ``values`` with its t-interval (``n − 1`` degrees of freedom)."""
    return contrast([values], [1.0], level)


def difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """``mean(a) − mean(b)`` with the Welch t-interval."""
    return contrast([a, b], [1.0, -1.0], level)


def slope_weights(x: Sequence[float]) -> np.ndarray:
    """Weights ``(x_g − x̄) / Σ (x_h − x̄)²``: the OLS slope of the group means on ``x``."""
    x = np.asarray(x, dtype=float)
    centred = x - x.mean()
    denom = float(np.sum(centred**2))
    if x.size < 2 or denom == 0:
        raise ValueError(f"x: expected at least two distinct values, got {x.tolist()}")
    return centred / denom


def slope(x: Sequence[float], groups: Sequence[Sequence[float]], level: float = 0.95) -> Interval:
    """The least-squares slope of the group means on ``x``, as a contrast (module docstring)."""
    return contrast(groups, slope_weights(x).tolist(), level)


def _check_margin(margin: float) -> None:
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not margin > 0:
        raise ValueError(f"margin: expected a number > 0, got {margin!r}")


def _check_bounds(lo: float, hi: float) -> tuple[float, float]:
    lo, hi = float(lo), float(hi)
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"lo, hi: expected an interval with lo <= hi, got [{lo}, {hi}]")
    return lo, hi


def verdict(lo: float, hi: float, *, direction: int, margin: float) -> str:
    """The verdict of a directional claim from its interval ``[lo, hi]`` (module docstring).

    With the interval oriented so that the paper's side is positive:

    * :data:`REPRODUCED`: it excludes 0 on the paper's side (``lo > 0``) and does not lie
      entirely below the margin (``hi >= margin``);
    * :data:`NOT_REPRODUCED`: it excludes 0 on the other side (``hi < 0``), or it lies entirely
      below the margin (``hi < margin``: an effect as large as the smallest one of interest is
      ruled out, also when the interval lies inside ``(0, margin)``);
    * :data:`INCONCLUSIVE`: otherwise (it contains 0 and reaches the margin).

    Args:
      lo: the interval's lower bound (``-inf`` allowed).
      hi: its upper bound (``+inf`` allowed).
      direction: ``+1`` if the paper predicts a positive effect, ``-1`` for a negative one.
      margin: the smallest effect of interest, > 0, in the effect's units.

    Raises:
      ValueError: ``direction`` not ±1, ``margin`` not > 0, or NaN / reversed bounds (a
        missing effect is "not computed", decided before a verdict is asked for).
    """
    if direction not in (1, -1) or isinstance(direction, bool):
        raise ValueError(f"direction: expected +1 or -1, got {direction!r}")
    _check_margin(margin)
    lo, hi = _check_bounds(lo, hi)
    if direction < 0:
        lo, hi = -hi, -lo
    if hi < 0 or hi < margin:
        return NOT_REPRODUCED
    if lo > 0:
        return REPRODUCED
    return INCONCLUSIVE


def equivalence_verdict(lo: float, hi: float, *, margin: float) -> str:
    """The verdict of a claim of *no* difference (``≈``) from its interval ``[lo, hi]``.

    * :data:`REPRODUCED`: the interval lies inside ``(−margin, margin)`` (equivalence shown);
    * :data:`NOT_REPRODUCED`: it lies entirely outside ``[−margin, margin]`` (a difference at
      least as large as the margin shown);
    * :data:`INCONCLUSIVE`: otherwise.

    Raises:
      ValueError: ``margin`` not > 0, or NaN / reversed bounds.
    """
    _check_margin(margin)
    lo, hi = _check_bounds(lo, hi)
    if -margin < lo and hi < margin:
        return REPRODUCED
    if lo > margin or hi < -margin:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def p_value(effect: Interval, *, direction: int, margin: float) -> float:
    """The one-sided p-value behind a verdict, for the Holm correction (:func:`holm`).

    Directional claims (``direction = ±1``): the test of ``H0: direction · E <= 0``.
    Equivalence claims (``direction = 0``): the two one-sided tests of ``|E| >= margin``
    (the larger p). The 95 % interval excludes the null exactly when ``p < 0.025``. Exact
    values (``se = 0``) give 0 or 1; NaN or infinite spread gives 1.
    """
    est, se = effect.estimate, effect.se
    if not math.isfinite(est) or not se < math.inf:
        return 1.0
    if direction == 0:
        if se == 0:
            return 0.0 if abs(est) < margin else 1.0
        lower = stats.t.sf((est + margin) / se, effect.df)
        upper = stats.t.cdf((est - margin) / se, effect.df)
        return float(max(lower, upper))
    oriented = direction * est
    if se == 0:
        return 0.0 if oriented > 0 else 1.0
    return float(stats.t.sf(oriented / se, effect.df))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as the input), capped at 1.

    ``p_adj(k) = max_{j <= k} min(1, (m − j + 1) · p_(j))`` over the sorted p-values. Rejecting
    where ``p_adj <= α`` controls the family-wise error rate at ``α`` for any dependence.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted
