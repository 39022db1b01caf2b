"""The paper's claims as measured effects: the :class:`Claim` record and the table of points.

A figure's *points table* (:func:`points_table`) joins its :class:`~nmelab.experiments.base.Point`
s with the per-seed results: one row per (point, seed), with the line, panel, x, status and
``score`` (test accuracy in percent; a diverged seed scores chance, see
:mod:`nmelab.experiments.results`). An effect is a linear contrast of group means over *cells*
``(line, x, weight)`` (:func:`measure`, :mod:`nmelab.experiments.verdicts`).

Training failures are shown, not hidden: :func:`measure` counts the diverged and collapsed seeds
in the cells of an effect and computes the effect a second time without them; a :class:`Claim`
judges both and says so when the two verdicts differ (the failures drive the result). A claim
with a missing run is "not computed", whatever its partial estimate says.

Claim groups (:data:`GROUPS`): the paper's primary training claims (the headline), its secondary
or post-hoc ones, its analysis claims (the structure of a measured curvature, e.g. §4.3's sparse
NME diagonal), exact identities (computed, not trained), and our own claims.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from nmelab.experiments import verdicts
from nmelab.experiments.base import Point
from nmelab.experiments.verdicts import Interval

__all__ = [
    "ACCURACY_MARGIN",
    "GROUPS",
    "NAN_INTERVAL",
    "Claim",
    "Measured",
    "Part",
    "apply_holm",
    "difference",
    "exact_measure",
    "gain_difference",
    "interval",
    "mean_difference",
    "measure",
    "points_table",
    "slope",
]

ACCURACY_MARGIN = 1.0
"""Smallest effect of interest for accuracy claims, in accuracy points (percent).

The paper's effects are of this order or larger (e.g. +1.6 points for the GN-trace penalty on
ImageNet, §5.2); an effect we can bound below 1 point is not the paper's effect. The same number
is the equivalence margin of the paper's "≈" claims: a difference bounded inside ±1 point is
"similar" at the precision the paper reports."""

NAN_INTERVAL = Interval(math.nan, -math.inf, math.inf, math.inf, 0.0, 0)

GROUPS = {
    "primary": "The paper's primary training claims (the headline)",
    "secondary": "Secondary or post-hoc claims (extra grid points, pilot-chosen values, our "
    "earlier pre-registration)",
    "analysis": "The paper's analysis claims (measured curvature structure, not accuracy)",
    "identity": "Exact computations and identities (hold by construction when the code is right)",
    "ours": "Our own claims (the mechanism behind the paper's explanation)",
}
"""Claim groups, in report order, with their headings."""

Cell = tuple[str, float, float]
"""``(line, x, weight)``: one group mean of a contrast."""

FAILED = ("diverged", "collapsed")


@dataclasses.dataclass(frozen=True)
class Measured:
    """An effect measured from a points table.

    Attributes:
      interval: the effect with its 95 % interval, every seed counted (a diverged seed at
        chance, a collapsed one at its accuracy).
      without_failures: the same effect without the diverged and collapsed seeds.
      num_seeds: seeds in the cells.
      num_diverged, num_collapsed: failed seeds among them.
      num_missing: runs of the cells without a (valid) result.
    """

    interval: Interval
    without_failures: Interval = NAN_INTERVAL
    num_seeds: int = 0
    num_diverged: int = 0
    num_collapsed: int = 0
    num_missing: int = 0

    @property
    def num_failed(self) -> int:
        """Diverged plus collapsed seeds."""
        return self.num_diverged + self.num_collapsed


def exact_measure(value: float) -> Measured:
    """An exactly computed value (no seeds, no failures)."""
    return Measured(verdicts.exact(value), verdicts.exact(value), 1)


def _mask(table: pd.DataFrame, line: str, x: float, panel: str) -> pd.Series:
    return (table["line"] == line) & np.isclose(table["x"], x) & (table["panel"] == panel)


def measure(table: pd.DataFrame, cells: Sequence[Cell], panel: str = "") -> Measured:
    """The contrast ``Σ weight · mean(score of line at x)`` over ``cells``, with its failures.

    Args:
      table: the points table.
      cells: ``[(line, x, weight), ...]``; a cell may repeat (its weights add up).
      panel: the panel of every cell.

    Returns:
      A :class:`Measured`; NaN intervals where a weighted cell has no seed.
    """
    weights: dict[tuple[str, float], float] = {}
    for line, x, weight in cells:
        weights[(line, float(x))] = weights.get((line, float(x)), 0.0) + float(weight)
    all_groups, clean_groups, w = [], [], []
    seeds = diverged = collapsed = missing = 0
    for (line, x), weight in weights.items():
        rows = table.loc[_mask(table, line, x, panel)]
        missing += int((rows["status"] == "missing").sum())
        present = rows[rows["status"] != "missing"]
        seeds += len(present)
        diverged += int((present["status"] == "diverged").sum())
        collapsed += int((present["status"] == "collapsed").sum())
        all_groups.append(present["score"].to_numpy(dtype=float))
        clean_groups.append(present.loc[~present["status"].isin(FAILED), "score"].to_numpy(float))
        w.append(weight)
    return Measured(
        _safe_contrast(all_groups, w),
        _safe_contrast(clean_groups, w),
        seeds,
        diverged,
        collapsed,
        missing,
    )


def _safe_contrast(groups: Sequence[np.ndarray], weights: Sequence[float]) -> Interval:
    if not groups or any(len(g) == 0 for g, w in zip(groups, weights, strict=True) if w != 0):
        return NAN_INTERVAL
    return verdicts.contrast(groups, weights)


def _judge(interval: Interval, direction: int, margin: float) -> str:
    if not math.isfinite(interval.estimate):
        return verdicts.NOT_COMPUTED
    if direction == 0:
        return verdicts.equivalence_verdict(interval.lo, interval.hi, margin=margin)
    return verdicts.verdict(interval.lo, interval.hi, direction=direction, margin=margin)


def _combine(parts: Sequence[str]) -> str:
    """Intersection-union rule: every part must be reproduced; one failed part fails the claim."""
    if verdicts.NOT_COMPUTED in parts:
        return verdicts.NOT_COMPUTED
    if verdicts.NOT_REPRODUCED in parts:
        return verdicts.NOT_REPRODUCED
    if all(p == verdicts.REPRODUCED for p in parts):
        return verdicts.REPRODUCED
    return verdicts.INCONCLUSIVE


@dataclasses.dataclass(frozen=True)
class Part:
    """A further condition a claim needs (intersection-union test: every part must hold).

    Attributes:
      name: what it measures, e.g. ``"GELU gain, ρ = 0 → 0.1"``.
      measured: its effect.
      direction: ``+1``/``−1`` (directional) or ``0`` (no difference).
      margin: its smallest effect of interest.
    """

    name: str
    measured: Measured
    direction: int
    margin: float


@dataclasses.dataclass
class Claim:
    """One claim of the paper (or ours), measured and judged.

    Attributes:
      key: short id, e.g. ``"fig2"`` or ``"fig4a"``.
      section: where the paper makes it, e.g. ``"§4.1, Fig. 2"``.
      statement: the claim in one sentence.
      effect_name: what is measured, e.g. ``"[GELU gain] − [ReLU gain] from ρ = 0 to 0.3"``.
      measured: the effect (:class:`Measured`).
      direction: ``+1``/``−1`` for a directional claim, ``0`` for a claim of no difference.
      margin: the smallest effect of interest (the equivalence margin for ``direction = 0``).
      group: one of :data:`GROUPS`.
      details: secondary measurements ``(name, interval)``.
      notes: caveats (choices made, missing runs), shown under the claim.
      unit: the unit of the effect, e.g. ``"points"``.
      rule_text: the verdict rule in words, when the default wording does not fit.
      parts: further conditions (:class:`Part`) the paper's statement makes; the claim is
        reproduced only if its effect and every part are, and not reproduced if any is not
        (an intersection-union test: no multiplicity correction needed, its p-value is the
        largest of the parts').
      holm_verdict: the verdict after Holm's correction within the claim's group
        (:func:`apply_holm`; empty until then).

    Every verdict goes through :func:`verdicts.verdict` or :func:`verdicts.equivalence_verdict`;
    a claim with a missing run is "not computed".
    """

    key: str
    section: str
    statement: str
    effect_name: str
    measured: Measured
    direction: int
    margin: float
    group: str = "primary"
    details: list[tuple[str, Interval]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    unit: str = "points"
    rule_text: str = ""
    parts: list[Part] = dataclasses.field(default_factory=list)
    holm_verdict: str = ""

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"group: expected one of {', '.join(GROUPS)}, got {self.group!r}")
        for part in self.parts:
            self.details.append((f"{part.name} (required)", part.measured.interval))
        if self.measured.num_missing:
            self.notes.append(
                f"{self.measured.num_missing} run(s) of this claim have no valid result "
                "(missing or damaged): not computed. Rerun the same command to complete them."
            )
        if self.measured.num_failed:
            self.notes.append(self.failure_line)

    @property
    def effect(self) -> Interval:
        """The measured effect (every seed counted)."""
        return self.measured.interval

    def _verdict(self, clean: bool) -> str:
        if self.measured.num_missing:
            return verdicts.NOT_COMPUTED
        pick = (lambda m: m.without_failures) if clean else (lambda m: m.interval)
        return _combine(
            [_judge(pick(self.measured), self.direction, self.margin)]
            + [_judge(pick(p.measured), p.direction, p.margin) for p in self.parts]
        )

    @property
    def verdict(self) -> str:
        """The verdict of record."""
        return self._verdict(clean=False)

    @property
    def sensitivity_verdict(self) -> str:
        """The verdict without the diverged and collapsed seeds."""
        return self._verdict(clean=True)

    @property
    def failures_drive_result(self) -> bool:
        """Whether leaving the failed seeds out changes the verdict."""
        return self.measured.num_failed > 0 and self.sensitivity_verdict != self.verdict

    @property
    def failure_line(self) -> str:
        """The failed seeds of the effect and the sensitivity verdict, in one sentence."""
        m = self.measured
        text = (
            f"Training failures: {m.num_diverged} diverged and {m.num_collapsed} collapsed of "
            f"{m.num_seeds} seeds in this effect (diverged scored at chance, collapsed at their "
            f"accuracy). Without them: {m.without_failures.format(2)} → "
            f"{self.sensitivity_verdict}."
        )
        if self.failures_drive_result:
            text += " **Training failures drive this result.**"
        return text

    @property
    def p_value(self) -> float:
        """The one-sided p-value behind the verdict (:func:`verdicts.p_value`)."""
        return max(
            verdicts.p_value(m.interval, direction=d, margin=g)
            for m, d, g in [(self.measured, self.direction, self.margin)]
            + [(p.measured, p.direction, p.margin) for p in self.parts]
        )

    @property
    def rule(self) -> str:
        """The verdict rule applied, in words."""
        if self.rule_text:
            return self.rule_text
        unit = f" {self.unit}" if self.unit else ""
        if self.direction == 0:
            rule = (
                f"a claim of no difference: reproduced if the 95 % CI lies inside "
                f"±{self.margin:g}{unit}; not reproduced if it lies outside "
                f"[−{self.margin:g}, {self.margin:g}]"
            )
            return rule + self._parts_rule
        side = "> 0" if self.direction > 0 else "< 0"
        return (
            f"paper predicts {side}; reproduced if the 95 % CI excludes 0 on that side and "
            f"reaches {self.margin:g}{unit}; not reproduced if it excludes 0 on the other side "
            f"or lies entirely below {self.margin:g}{unit}"
        ) + self._parts_rule

    @property
    def _parts_rule(self) -> str:
        if not self.parts:
            return ""
        return (
            "; the same rule is applied to every required part ("
            + ", ".join(p.name for p in self.parts)
            + "): reproduced only if all are, not reproduced if any is not"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        m = self.measured
        return {
            "key": self.key,
            "group": self.group,
            "section": self.section,
            "statement": self.statement,
            "effect_name": self.effect_name,
            "effect": self.effect.to_dict(),
            "effect_without_failures": m.without_failures.to_dict(),
            "num_seeds": m.num_seeds,
            "num_diverged": m.num_diverged,
            "num_collapsed": m.num_collapsed,
            "num_missing_runs": m.num_missing,
            "direction": self.direction,
            "margin": self.margin,
            "verdict": self.verdict,
            "verdict_without_failures": self.sensitivity_verdict,
            "failures_drive_result": self.failures_drive_result,
            "p_value": self.p_value,
            "holm_verdict": self.holm_verdict,
            "rule": self.rule,
            "unit": self.unit,
            "details": [{"name": n, **i.to_dict()} for n, i in self.details],
            "notes": list(self.notes),
        }


HOLM_ALPHA = 0.025
"""One-sided level matching the two-sided 95 % intervals of the raw verdicts."""


def apply_holm(claims: Sequence[Claim]) -> None:
    """Set :attr:`Claim.holm_verdict` with Holm's correction within each group.

    The family is the group's computed claims. A raw "reproduced" stays reproduced only if its
    Holm-adjusted p-value is at most :data:`HOLM_ALPHA`; otherwise it becomes inconclusive.
    "Not reproduced" and "inconclusive" verdicts are kept (the correction only guards against
    false positives), and "not computed" stays.
    """
    for group in GROUPS:
        family = [c for c in claims if c.group == group and c.verdict != verdicts.NOT_COMPUTED]
        adjusted = verdicts.holm([c.p_value for c in family])
        for claim, p_adj in zip(family, adjusted, strict=True):
            keep = claim.verdict != verdicts.REPRODUCED or p_adj <= HOLM_ALPHA
            claim.holm_verdict = claim.verdict if keep else verdicts.INCONCLUSIVE
        for claim in claims:
            if claim.group == group and claim.verdict == verdicts.NOT_COMPUTED:
                claim.holm_verdict = verdicts.NOT_COMPUTED


def points_table(points: Sequence[Point], results: pd.DataFrame) -> pd.DataFrame:
    """One row per (point, seed): ``line, panel, x, run_id, seed, status, accuracy, score``.

    A point whose run has no result yet gives one row with ``status = "missing"`` and NaN values.
    """
    by_run = {rid: rows for rid, rows in results.groupby("run_id")} if len(results) else {}
    records = []
    for point in points:
        for spec in point.specs:
            rows = by_run.get(spec.run_id)
            base = {
                "line": point.line,
                "panel": point.panel,
                "x": float(point.x),
                "run_id": spec.run_id,
            }
            if rows is None:
                records.append(
                    {
                        **base,
                        "seed": math.nan,
                        "status": "missing",
                        "accuracy": math.nan,
                        "score": math.nan,
                        "train_accuracy": math.nan,
                    }
                )
                continue
            for _, row in rows.iterrows():
                records.append(
                    {
                        **base,
                        "seed": row["seed"],
                        "status": row["status"],
                        "accuracy": row["accuracy"],
                        "score": row["score"],
                        "train_accuracy": 100.0 * row["train_accuracy"],
                    }
                )
    columns = [
        "line",
        "panel",
        "x",
        "run_id",
        "seed",
        "status",
        "accuracy",
        "score",
        "train_accuracy",
    ]
    return pd.DataFrame.from_records(records, columns=columns)


def interval(table: pd.DataFrame, cells: Sequence[Cell], panel: str = "") -> Interval:
    """The interval of :func:`measure` (every seed counted), for a claim's details."""
    return measure(table, cells, panel).interval


def difference(line_a: str, line_b: str, x: float, x_b: float | None = None) -> list[Cell]:
    """Cells of ``mean(line_a at x) − mean(line_b at x_b)`` (``x_b`` defaults to ``x``)."""
    return [(line_a, x, 1.0), (line_b, x if x_b is None else x_b, -1.0)]


def mean_difference(line_a: str, line_b: str, xs: Sequence[float]) -> list[Cell]:
    """Cells of the average over ``xs`` of ``line_a − line_b``."""
    k = len(xs)
    return [(line_a, x, 1.0 / k) for x in xs] + [(line_b, x, -1.0 / k) for x in xs]


def gain_difference(line_a: str, line_b: str, x0: float, x1: float) -> list[Cell]:
    """Cells of ``[a(x1) − a(x0)] − [b(x1) − b(x0)]``: a's gain from x0 to x1 minus b's."""
    return [(line_a, x1, 1.0), (line_a, x0, -1.0), (line_b, x1, -1.0), (line_b, x0, 1.0)]


def slope(line: str, xs: Sequence[float]) -> list[Cell]:
    """Cells of the OLS slope of the line's group means over ``xs`` (points per unit x)."""
    return [(line, x, w) for x, w in zip(xs, verdicts.slope_weights(xs), strict=True)]
