"""The plan of a sweep: every run a scale performs, once, with its overrides, seeds and cost.

:func:`plan` is the one place the task list of ``nmelab reproduce`` is computed: the sweep runs
exactly the plan's tasks, and ``nmelab reproduce --plan [--json]`` prints them without running
anything. A run shared by several experiments (e.g. the SGD baseline that is the ρ = 0 point of
Fig. 2, Fig. 4 and Fig. 6) appears once, with every experiment that uses it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from nmelab.experiments import base, recipes
from nmelab.experiments.sweep import RunSpec

__all__ = ["PlannedRun", "plan", "plan_json", "plan_text"]


@dataclasses.dataclass
class PlannedRun:
    """One task of the plan.

    Attributes:
      spec: the task.
      experiments: every experiment that uses it, in report order.
    """

    spec: RunSpec
    experiments: list[str]

    @property
    def seeds(self) -> list[int]:
        """The seeds the task trains (empty for a computation)."""
        config = self.spec.config
        if "num_seeds" not in config:
            return []
        return list(range(int(config["seed"]), int(config["seed"]) + int(config["num_seeds"])))

    @property
    def overrides(self) -> dict[str, Any]:
        """Config keys (dotted) that differ from the task's recipe; the whole config if none."""
        if not self.spec.recipe:
            return dict(_flat(self.spec.config))
        recipe = _flat(recipes.recipe_dict(recipes.Recipe.parse(self.spec.recipe)))
        mine = _flat(self.spec.config)
        return {k: v for k, v in mine.items() if k not in recipe or recipe[k] != v}

    def to_json(self) -> dict[str, Any]:
        """A JSON object: run id, experiments, recipe, overrides, seeds, cost estimate."""
        return {
            "run_id": self.spec.run_id,
            "experiments": self.experiments,
            "recipe": self.spec.recipe or self.spec.runner,
            "overrides": self.overrides,
            "seeds": self.seeds,
            "cost_s": self.spec.cost,
        }


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def plan(names: Sequence[str], scale: base.Scale) -> list[PlannedRun]:
    """Every task of the named experiments at ``scale``, once, in first-use order."""
    runs: dict[str, PlannedRun] = {}
    for name in names:
        for point in base.get(name).points(scale):
            for spec in point.specs:
                run = runs.setdefault(spec.digest, PlannedRun(spec, []))
                if name not in run.experiments:
                    run.experiments.append(name)
    return list(runs.values())


def plan_text(runs: Sequence[PlannedRun], scale: base.Scale) -> str:
    """The plan for people: one line per run, then the totals."""
    lines = []
    for run in runs:
        overrides = " ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}"
            for k, v in run.overrides.items()
            if k not in ("num_seeds", "seed", "progress")
        )
        seeds = f"seeds {run.seeds[0]}-{run.seeds[-1]}" if run.seeds else "exact"
        lines.append(
            f"{run.spec.run_id}  [{','.join(run.experiments)}]  {run.spec.recipe or run.spec.runner}"
            f"  {overrides}  ({seeds}, ~{run.spec.cost:.0f} s)"
        )
    total = sum(r.spec.cost for r in runs)
    seeds = sum(len(r.seeds) for r in runs)
    lines.append(
        f"{len(runs)} runs at scale {scale.name} ({seeds} trained seeds); compute estimate "
        f"{_duration(total)} of one worker (MNIST-1D runs: one core of a 2-core CPU; CIFAR-10 and "
        "ImageNet runs: one GPU); rough, for planning only"
    )
    return "\n".join(lines)


def plan_json(runs: Sequence[PlannedRun], scale: base.Scale) -> str:
    """The plan as JSON: ``{"scale", "num_runs", "cost_s", "runs": [...]}``."""
    return json.dumps(
        {
            "scale": scale.name,
            "num_seeds": scale.num_seeds,
            "num_runs": len(runs),
            "cost_s": sum(r.spec.cost for r in runs),
            "runs": [r.to_json() for r in runs],
        },
        indent=1,
        ensure_ascii=False,
    )


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"
