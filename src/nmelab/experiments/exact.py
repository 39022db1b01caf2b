"""Experiments made of one exact computation (Fig. 1, App. B.4): no training, no seeds.

:func:`exact_experiment` builds the :class:`~nmelab.experiments.base.Experiment` from a runner,
its config per scale, a claims function of the stored summary and a figure function of the stored
arrays. The task's validator (the runner module's ``validate``) loads those arrays whenever the
result is read, so a damaged ``.npz`` counts as not done and is recomputed; a missing or damaged
result gives "not computed" claims, never "reproduced".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nmelab.experiments import claims as C
from nmelab.experiments.base import Experiment, Point, Scale
from nmelab.experiments.sweep import RunSpec, load_record, run_dir

__all__ = ["exact_experiment"]


def exact_experiment(
    *,
    name: str,
    title: str,
    section: str,
    module: str,
    config_fn: Callable[[str], dict[str, Any]],
    cost: float,
    describe: Callable[[Scale], str],
    claims_fn: Callable[[Mapping[str, Any]], list[C.Claim]],
    claim_keys: tuple[str, ...],
    figure_fn: Callable[..., list[Path]],
    load_fn: Callable[[Path], Mapping[str, Any]],
) -> Experiment:
    """An :class:`Experiment` of one computation task.

    Args:
      name: the experiment name (also the task name and the figure's file name).
      title: the report title.
      section: where the paper makes the claims.
      module: the module holding ``run(config, workdir)`` and ``validate(workdir, summary)``.
      config_fn: ``scale name -> config``.
      cost: the task's rough cost in seconds.
      describe: ``scale -> setup text``.
      claims_fn: ``summary -> claims`` from the task's stored summary.
      claim_keys: the keys ``claims_fn`` returns (listed as "not computed" without a result).
      figure_fn: ``figure_fn(arrays, summary, out_base) -> paths``.
      load_fn: ``workdir -> arrays`` the runner saved.
    """

    def spec(scale: Scale) -> RunSpec:
        return RunSpec(
            f"{module}:run", config_fn(scale.name), name, cost=cost, validator=f"{module}:validate"
        )

    def stored(scale: Scale, root: Any) -> dict[str, Any] | None:
        try:
            return load_record(run_dir(root, spec(scale)), spec(scale).digest)
        except ValueError:
            return None

    def claims(table: Any, scale: Scale, root: Any) -> list[C.Claim]:
        result = stored(scale, root)
        if result is not None:
            return claims_fn(result["summary"])
        missing = C.Measured(C.NAN_INTERVAL, num_missing=1)
        return [
            C.Claim(
                key, section, f"{title}: not computed.", "-", missing, +1, 1.0, group="identity"
            )
            for key in claim_keys
        ]

    def plot(table: Any, out_dir: Any, scale: Scale, root: Any) -> list[Path]:
        result = stored(scale, root)
        if result is None:
            return []
        workdir = run_dir(root, spec(scale))
        return figure_fn(load_fn(workdir), result["summary"], Path(out_dir) / name)

    return Experiment(
        name=name,
        title=title,
        section=section,
        points=lambda scale: [Point(name, 0.0, spec(scale))],
        describe=describe,
        claims=claims,
        plot=plot,
    )
