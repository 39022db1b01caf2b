"""Publish a finished reproduction next to the code, and set a new run's verdicts beside it.

:func:`publish` copies what a reader needs from a ``nmelab reproduce --out`` folder into a
folder of the repository (``docs/results/<scale>/``): ``report.md`` with its PNG figures,
``claims.json`` (every claim, the scale, its seeds and experiments) and ``results.csv`` (every
stored run, one row per seed, :func:`~nmelab.experiments.load_results`). The run folders are not
copied: a checkpoint is no evidence a reader can check without running anything, a table is.
The report's header already states the exact command, the nmelab version and commit, the
machine and the wall and CPU time of every invocation.

:func:`compare_claims` reads two ``claims.json`` (a published folder and a new ``--out``) and
pairs their verdicts, so that a user who reruns on other hardware sees at once what changed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from nmelab._io import read_json, write_bytes_atomic
from nmelab.experiments.results import write_results_csv

__all__ = ["ClaimChange", "compare_claims", "publish"]

CLAIMS_FILE = "claims.json"
REPORT_FILE = "report.md"
RESULTS_FILE = "results.csv"


def publish(out: str | Path, dest: str | Path) -> list[Path]:
    """Copy the report, its PNG figures, ``claims.json`` and the results as CSV to ``dest``.

    Files an earlier publication left in ``dest`` (old figures included) are replaced, so the
    folder always describes one reproduction.

    Args:
      out: a finished ``nmelab reproduce --out`` folder (its report written).
      dest: the folder to publish into, e.g. ``docs/results/small``.

    Returns:
      The files written, ``report.md`` first.

    Raises:
      ValueError: ``out`` has no report yet, or ``dest`` is ``out`` itself.
    """
    out, dest = Path(out), Path(dest)
    if dest.resolve() == out.resolve():
        raise ValueError(f"dest: expected a folder other than out, got {str(dest)!r} for both")
    for name in (REPORT_FILE, CLAIMS_FILE):
        if not (out / name).is_file():
            raise ValueError(
                f"out: {str(out / name)!r} is missing; run `nmelab reproduce --out {out}` "
                "(or add --report-only) first"
            )
    claims = read_json(out / CLAIMS_FILE)
    figures = [png for pngs in claims.get("figures", {}).values() for png in pngs]
    dest.mkdir(parents=True, exist_ok=True)
    for old in (dest / "figures").glob("*.png"):
        old.unlink()
    written = []
    for name in (REPORT_FILE, CLAIMS_FILE, *figures):
        write_bytes_atomic(dest / name, (out / name).read_bytes())
        written.append(dest / name)
    write_results_csv(out, dest / RESULTS_FILE)
    written.append(dest / RESULTS_FILE)
    return written


@dataclasses.dataclass(frozen=True)
class ClaimChange:
    """One claim's verdict in a published reproduction and in a new run.

    Attributes:
      key: the claim, e.g. ``"fig2"``.
      group: its report group (``"primary"``, ``"secondary"``, ...).
      published: the published verdict (``"absent"`` if the claim is not there).
      new: the new run's verdict (``"absent"`` likewise).
      published_effect: the published effect and 95 % CI as text.
      new_effect: the new effect and 95 % CI as text.
    """

    key: str
    group: str
    published: str
    new: str
    published_effect: str
    new_effect: str

    @property
    def changed(self) -> bool:
        """Whether the verdict differs."""
        return self.published != self.new


def _claims(where: str | Path, arg: str) -> dict[str, dict[str, Any]]:
    path = Path(where)
    path = path / CLAIMS_FILE if path.is_dir() else path
    if not path.is_file():
        raise ValueError(
            f"{arg}: {str(path)!r} not found; expected a published folder or a finished "
            "`nmelab reproduce --out` folder (with claims.json)"
        )
    try:
        return {c["key"]: c for c in read_json(path)["claims"]}
    except (KeyError, TypeError) as err:
        raise ValueError(f"{arg}: {str(path)!r} has no list of claims ({err!r})") from None


def _effect_text(claim: dict[str, Any] | None) -> str:
    effect = (claim or {}).get("effect") or {}
    values = [effect.get(k) for k in ("estimate", "lo", "hi")]
    if not all(isinstance(v, int | float) for v in values):
        return "–"
    unit = f" {claim['unit']}" if claim.get("unit") else ""
    return f"{values[0]:+.3g} [{values[1]:+.3g}, {values[2]:+.3g}]{unit}"


def compare_claims(published: str | Path, new: str | Path) -> list[ClaimChange]:
    """Pair each claim's published verdict with the new run's, in the published order.

    Args:
      published: a folder with ``claims.json`` (e.g. ``docs/results/small``) or the file.
      new: a finished ``nmelab reproduce --out`` folder, or its ``claims.json``.

    Returns:
      One :class:`ClaimChange` per claim of either side (claims only in ``new`` last).

    Raises:
      ValueError: either side has no readable ``claims.json`` (the message names the argument).
    """
    before, after = _claims(published, "published"), _claims(new, "new")
    rows = []
    for key in [*before, *(k for k in after if k not in before)]:
        b, a = before.get(key), after.get(key)
        rows.append(
            ClaimChange(
                key=key,
                group=(b or a)["group"],
                published=b["verdict"] if b else "absent",
                new=a["verdict"] if a else "absent",
                published_effect=_effect_text(b),
                new_effect=_effect_text(a),
            )
        )
    return rows
