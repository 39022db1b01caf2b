"""The paper's claims as measured effects: the :class:`Claim` record and the table of points.

A figure's *points table* (:func:`points_table`) joins its :class:`~nmelab.experiments.registry.
Point` s with the per-seed results: one row per (point, seed), with the line, panel, x, status and
``score`` (test accuracy in percent, a diverged seed at chance; see
:mod:`nmelab.experiments.results`). The claim helpers below compute effects from it as contrasts
of group means (:mod:`nmelab.experiments.verdicts`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from nmelab.experiments import verdicts
from nmelab.experiments.registry import Point
from nmelab.experiments.verdicts import Interval

__all__ = ["ACCURACY_MARGIN", "Claim", "group", "points_table"]

ACCURACY_MARGIN = 1.0
"""Smallest effect of interest for accuracy claims, in accuracy points (percent).

The paper's effects are of this order or larger (e.g. +1.6 points for the GN-trace penalty on
ImageNet, §5.2); an effect we can bound below 1 point is not the paper's effect."""

NAN_INTERVAL = Interval(math.nan, -math.inf, math.inf, math.inf, 0.0, 0)


@dataclasses.dataclass
class Claim:
    """One claim of the paper, measured.

    Attributes:
      key: short id, e.g. ``"fig2"`` or ``"fig4a"``.
      section: where the paper makes it, e.g. ``"§4.1, Fig. 2"``.
      statement: the claim in one sentence.
      effect_name: what is measured, e.g. ``"slope(GELU) − slope(ReLU), points per unit ρ"``.
      effect: the measured effect with its 95 % interval.
      direction: ``+1``/``−1`` for a directional claim, ``0`` for a claim of no difference.
      margin: the smallest effect of interest (equivalence margin for ``direction = 0``).
      verdict: one of the three verdicts of :mod:`nmelab.experiments.verdicts`.
      details: secondary measurements ``(name, interval)``.
      notes: caveats (missing runs, choices made), shown under the claim.
      unit: the unit of the effect, e.g. ``"points"``.
    """

    key: str
    section: str
    statement: str
    effect_name: str
    effect: Interval
    direction: int
    margin: float
    verdict: str = ""
    details: list[tuple[str, Interval]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    unit: str = "points"
    rule_text: str = ""

    def __post_init__(self) -> None:
        if not self.verdict:
            if self.direction == 0:
                self.verdict = verdicts.judge_equivalence(self.effect, self.margin)
            else:
                self.verdict = verdicts.judge(self.effect, self.direction, self.margin)

    @property
    def rule(self) -> str:
        """The verdict rule applied, in words."""
        if self.rule_text:
            return self.rule_text
        unit = f" {self.unit}" if self.unit else ""
        if self.direction == 0:
            return (
                f"reproduced if the 95 % CI lies inside ±{self.margin:g}{unit}; not "
                f"reproduced if it excludes [−{self.margin:g}, {self.margin:g}]"
            )
        side = "> 0" if self.direction > 0 else "< 0"
        return (
            f"paper predicts {side}; reproduced if the 95 % CI excludes 0 on that side; not "
            f"reproduced if it excludes 0 on the other side or rules out {self.margin:g}{unit}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "key": self.key,
            "section": self.section,
            "statement": self.statement,
            "effect_name": self.effect_name,
            "effect": self.effect.to_dict(),
            "direction": self.direction,
            "margin": self.margin,
            "verdict": self.verdict,
            "rule": self.rule,
            "unit": self.unit,
            "details": [{"name": n, **i.to_dict()} for n, i in self.details],
            "notes": list(self.notes),
        }


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


def group(table: pd.DataFrame, line: str, x: float, panel: str = "") -> np.ndarray:
    """The per-seed scores of one point (empty if missing)."""
    mask = (table["line"] == line) & np.isclose(table["x"], x) & (table["panel"] == panel)
    values = table.loc[mask & (table["status"] != "missing"), "score"]
    return values.to_numpy(dtype=float)


def missing_note(table: pd.DataFrame) -> list[str]:
    """A note listing runs without results, if any."""
    missing = table.loc[table["status"] == "missing", "run_id"].unique()
    if len(missing) == 0:
        return []
    return [f"{len(missing)} run(s) have no result yet; the effect uses only the finished ones."]


def failure_notes(
    table: pd.DataFrame, cells: Sequence[tuple[str, float]], panel: str = ""
) -> list[str]:
    """A note per cell of the effect whose seeds diverged or collapsed (the effect includes them).

    Args:
      table: the points table.
      cells: ``[(line, x), ...]`` entering the effect.
      panel: the panel.
    """
    notes = []
    for line, x in dict.fromkeys(cells):
        mask = (table["line"] == line) & np.isclose(table["x"], x) & (table["panel"] == panel)
        counts = table.loc[mask, "status"].value_counts()
        bad = {s: int(counts.get(s, 0)) for s in ("diverged", "collapsed") if counts.get(s, 0)}
        if bad:
            what = " and ".join(f"{n} {s}" for s, n in bad.items())
            notes.append(
                f"{line} at x = {x:g}: {what} seed(s) of {int(mask.sum())} enter the effect "
                "(diverged at chance, collapsed at their accuracy): the effect reflects a "
                "training failure there, not only a difference in generalisation."
            )
    return notes


def safe_contrast(groups: Sequence[np.ndarray], weights: Sequence[float]) -> Interval:
    """:func:`verdicts.contrast`, or a NaN interval if a weighted group is empty."""
    if any(len(g) == 0 for g, w in zip(groups, weights, strict=True) if w != 0):
        return NAN_INTERVAL
    return verdicts.contrast(groups, weights)


def line_slope(table: pd.DataFrame, line: str, xs: Sequence[float], panel: str = "") -> Interval:
    """OLS slope of the line's group means over ``xs`` (points per unit x)."""
    groups = [group(table, line, x, panel) for x in xs]
    return safe_contrast(groups, verdicts.slope_weights(xs).tolist())


def slope_difference(
    table: pd.DataFrame, line_a: str, line_b: str, xs: Sequence[float], panel: str = ""
) -> Interval:
    """``slope(line_a) − slope(line_b)`` over ``xs``, as one contrast."""
    weights = verdicts.slope_weights(xs).tolist()
    groups = [group(table, line_a, x, panel) for x in xs] + [
        group(table, line_b, x, panel) for x in xs
    ]
    return safe_contrast(groups, weights + [-w for w in weights])


def difference_at(
    table: pd.DataFrame,
    line_a: str,
    line_b: str,
    x: float,
    panel: str = "",
    x_b: float | None = None,
) -> Interval:
    """``mean(line_a at x) − mean(line_b at x_b)`` (``x_b`` defaults to ``x``)."""
    return safe_contrast(
        [group(table, line_a, x, panel), group(table, line_b, x if x_b is None else x_b, panel)],
        [1.0, -1.0],
    )


def mean_difference(
    table: pd.DataFrame, line_a: str, line_b: str, xs: Sequence[float], panel: str = ""
) -> Interval:
    """The average over ``xs`` of ``line_a − line_b``."""
    k = len(xs)
    groups = [group(table, line_a, x, panel) for x in xs] + [
        group(table, line_b, x, panel) for x in xs
    ]
    return safe_contrast(groups, [1.0 / k] * k + [-1.0 / k] * k)


def interaction(
    table: pd.DataFrame,
    cells: Sequence[tuple[str, float, float]],
    panel: str = "",
) -> Interval:
    """``Σ weight · mean(line at x)`` over ``cells = [(line, x, weight), ...]``."""
    groups = [group(table, line, x, panel) for line, x, _ in cells]
    return safe_contrast(groups, [w for _, _, w in cells])
