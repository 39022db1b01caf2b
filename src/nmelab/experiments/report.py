"""The reproduction report: figures, the claims with their effects and verdicts, in Markdown and HTML.

:func:`build_report` computes every figure and claim of the requested experiments from what is
stored under the sweep root (nothing is trained here; a damaged record counts as missing), and
:func:`write_report` writes

* ``report.md`` - Markdown, figures linked relatively (``figures/fig2.png``);
* ``report.html`` - one self-contained file, every figure embedded as a base64 PNG;
* ``claims.json`` - the claims, effects, intervals, failure counts and verdicts;
* ``figures/*.png`` and ``figures/*.pdf``.

The report iterates over the experiments it is given and names none of them: each experiment
brings its points, claims, figure and extra sections (:class:`~nmelab.experiments.base.
Experiment`). The verdict table is split by claim group (:data:`~nmelab.experiments.claims.
GROUPS`); the headline counts only the paper's primary claims, with Holm-adjusted verdicts
beside the raw ones. Every claim appears with its verdict, whatever it is.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import platform
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nmelab._io import write_json_atomic, write_text_atomic
from nmelab.experiments import base, labels, verdicts
from nmelab.experiments import claims as C
from nmelab.experiments.recipes import TRAIN_RUNNER
from nmelab.experiments.report_blocks import VERDICT_COLORS, Block, to_html, to_markdown

__all__ = [
    "INVOCATIONS_FILE",
    "Report",
    "build_report",
    "compute_claims",
    "effect_text",
    "write_report",
]

INVOCATIONS_FILE = "invocations.jsonl"

RULES_TEXT = (
    "Each effect is a linear contrast of per-grid-point means over seeds (a difference, a "
    "difference of differences, or a gain from ρ = 0 to a pre-registered ρ*), with a 95 % "
    "Welch–Satterthwaite t-interval; a diverged seed is scored at chance accuracy (its "
    "predictions are meaningless), a collapsed seed at its measured accuracy, and every claim "
    "says how many of its seeds failed and what the verdict would be without them. "
    "**Reproduced**: the interval excludes 0 on the paper's side and does not lie entirely below "
    "the smallest effect of interest (1 accuracy point unless stated; 0.05 for cosines). **Not "
    "reproduced**: it excludes 0 on the opposite side, or lies entirely below that margin "
    "(including an interval inside (0, margin)). **Inconclusive at this scale**: otherwise. "
    "Claims of *no* difference (the paper's “≈”) are reproduced when the interval lies inside "
    "±margin and not reproduced when it lies outside [−margin, margin]. **Not computed**: a run "
    "of the claim is missing or its stored result is damaged. Holm's correction is applied "
    "within each group (one-sided level 0.025, matching the 95 % intervals); it can only turn "
    "“reproduced” into “inconclusive”. The claims, grids, seeds and rules were fixed in the code "
    "before the runs."
)


@dataclasses.dataclass
class Report:
    """A built report.

    Attributes:
      blocks: the content.
      claims: every claim, in order.
      figures: PNG paths relative to the output folder, per experiment.
      title: the title.
      scale: the scale of the runs.
      experiments: the experiment names, in report order.
    """

    blocks: list[Block]
    claims: list[C.Claim]
    figures: dict[str, list[str]]
    title: str
    scale: base.Scale
    experiments: list[str]


def _digits(unit: str) -> int:
    return 3 if unit in ("cosine", "") else 2


def effect_text(claim: C.Claim) -> str:
    """The effect with its interval, ``"n/a"`` without data, the value alone when exact."""
    iv = claim.effect
    if not math.isfinite(iv.estimate):
        return "n/a"
    if iv.se == 0 and math.isinf(iv.df):
        return f"{iv.estimate:.3g} (exact)"
    return iv.format(_digits(claim.unit)) + (f" {claim.unit}" if claim.unit else "")


def _detail_text(name: str, iv: verdicts.Interval, unit: str) -> str:
    if not math.isfinite(iv.estimate):
        return f"{name}: n/a"
    if iv.se == 0 and math.isinf(iv.df):
        return f"{name}: {iv.estimate:.3g}"
    return f"{name}: {iv.format(_digits(unit))}"


def _failures_text(claim: C.Claim) -> str:
    m = claim.measured
    if m.num_missing:
        return f"{m.num_missing} run(s) missing"
    if not m.num_failed:
        return "none"
    text = f"{m.num_diverged} diverged, {m.num_collapsed} collapsed of {m.num_seeds}"
    return text + (" — **drive the result**" if claim.failures_drive_result else "")


def _baselines(results: pd.DataFrame, run_ids: set[str]) -> list[list[str]]:
    """SGD rows of the requested experiments: test and train accuracy per model and activation."""
    if results.empty or "method" not in results:
        return []
    sgd = results[(results["method"] == "sgd") & results["run_id"].isin(run_ids)]
    rows = []
    for (model, act, beta, epochs), sub in sgd.groupby(
        ["model", "activation", sgd["beta"].fillna(-1.0), "num_epochs"], dropna=False
    ):
        test = verdicts.mean_interval(sub["score"].to_numpy(dtype=float))
        train = sub["train_accuracy"].to_numpy(dtype=float) * 100
        label = labels.activation_label(act, {"beta": beta} if beta > 0 else None)
        statuses = sub["status"].value_counts().to_dict()
        rows.append(
            [
                str(model),
                label,
                f"{epochs:g}",
                str(len(sub)),
                f"{test.estimate:.1f} [{test.lo:.1f}, {test.hi:.1f}]"
                if len(sub) > 1
                else f"{test.estimate:.1f}",
                f"{np.nanmean(train):.1f}" if np.isfinite(train).any() else "n/a",
                ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())),
            ]
        )
    return rows


def _claim_blocks(claim: C.Claim) -> list[Block]:
    line = f"*Measured:* {claim.effect_name} = {effect_text(claim)} → **{claim.verdict}**"
    if claim.holm_verdict and claim.holm_verdict != claim.verdict:
        line += f" (after Holm: **{claim.holm_verdict}**)"
    if claim.failures_drive_result:
        line += (
            f"; without the failed seeds: **{claim.sensitivity_verdict}** — training failures "
            "drive this result"
        )
    items = [_detail_text(n, iv, claim.unit) for n, iv in claim.details]
    items += [f"Rule: {claim.rule}."] + [f"Note: {n}" for n in claim.notes]
    return [
        Block("h3", f"Claim {claim.key} ({claim.section})"),
        Block("p", f"*Paper:* {claim.statement}"),
        Block("p", line),
        Block("ul", items=items),
    ]


def _verdict_tables(all_claims: Sequence[C.Claim]) -> list[Block]:
    primary = [c for c in all_claims if c.group == "primary"]
    raw = {v: sum(c.verdict == v for c in primary) for v in VERDICT_COLORS}
    holm = {v: sum(c.holm_verdict == v for c in primary) for v in VERDICT_COLORS}
    out = [
        Block("h2", "Verdicts"),
        Block(
            "p",
            f"{len(all_claims)} claims tested; **{len(primary)} are the paper's primary training "
            "claims** (the headline): "
            + ", ".join(f"**{v}**: {n}" for v, n in raw.items())
            + "; after Holm's correction: "
            + ", ".join(f"{v}: {n}" for v, n in holm.items())
            + ". Exact identities, our own claims and secondary claims are listed separately "
            "and not counted in the headline.",
        ),
    ]
    headers = ["claim", "where", "the paper says", "measured effect [95 % CI]",
               "failed seeds", "verdict", "after Holm"]  # fmt: skip
    for group, heading in C.GROUPS.items():
        members = [c for c in all_claims if c.group == group]
        if not members:
            continue
        out.append(Block("h3", f"{heading} ({len(members)})"))
        rows = [
            [c.key, c.section, c.statement, f"{c.effect_name}: {effect_text(c)}",
             _failures_text(c), f"**{c.verdict}**", c.holm_verdict]
            for c in members
        ]  # fmt: skip
        out.append(Block("table", headers=headers, rows=rows))
    out.append(Block("p", "How verdicts are decided: " + RULES_TEXT))
    return out


def compute_claims(
    names: Sequence[str], scale: base.Scale, results: pd.DataFrame, root: str | Path
) -> dict[str, list[C.Claim]]:
    """Every claim of the experiments ``names``, per experiment, with Holm's correction applied.

    The one place claims are computed: the report and the check of published results
    (``tests/docs/test_published_results.py``) both call it.

    Args:
      names: experiment names.
      scale: the scale the runs were made at.
      results: :func:`nmelab.experiments.load_results` of a sweep root or of its exported CSV.
      root: the sweep root, for the experiments that read arrays from their run folders;
        without those folders their claims are "not computed".

    Returns:
      ``{name: [Claim]}`` in the order of ``names``.
    """
    by_name = {}
    for name in names:
        exp = base.get(name)
        by_name[name] = exp.claims(C.points_table(exp.points(scale), results), scale, Path(root))
    C.apply_holm([c for claims in by_name.values() for c in claims])
    return by_name


def build_report(
    root: str | Path,
    names: Sequence[str],
    scale: base.Scale,
    results: pd.DataFrame,
    *,
    sweep_info: Mapping[str, Any] | None = None,
) -> Report:
    """Compute every figure and claim of ``names`` from ``results`` and the files under ``root``.

    Args:
      root: the sweep root (the ``--out`` folder); figures go to ``root/figures``.
      names: experiment names, in report order.
      scale: the scale the runs were made at.
      results: :func:`nmelab.experiments.load_results` of ``root`` (valid records only).
      sweep_info: facts about the invocation for the header (``failed``: run id → error).

    Returns:
      A :class:`Report`; nothing is written yet (:func:`write_report`).
    """
    root = Path(root)
    fig_dir = root / "figures"
    info = dict(sweep_info or {})
    all_claims: list[C.Claim] = []
    figures_by_exp: dict[str, list[str]] = {}
    sections: list[Block] = []
    run_ids: set[str] = set()
    done = set(results["run_id"]) if len(results) else set()
    claims_by_name = compute_claims(names, scale, results, root)
    for name in names:
        exp = base.get(name)
        pts = exp.points(scale)
        table = C.points_table(pts, results)
        ids = {spec.run_id for p in pts for spec in p.specs}
        run_ids |= ids
        claims = claims_by_name[name]
        try:
            has_data = bool((table["status"] != "missing").any())
            paths = exp.plot(table, fig_dir, scale, root) if has_data else []
        except Exception as err:  # noqa: BLE001 - a broken plot must not lose the report
            paths = []
            claims[0].notes.append(f"figure failed: {err!r}")
        pngs = [str(Path(p).relative_to(root)) for p in paths if str(p).endswith(".png")]
        figures_by_exp[name] = pngs
        all_claims += claims
        sections.append(Block("h2", exp.title))
        sections.append(Block("p", f"*{exp.section}.* Setup: {exp.describe(scale)}"))
        sections += [Block("img", exp.title, path=png) for png in pngs]
        sections += exp.report_sections(table, scale, root)
        for claim in claims:
            sections += _claim_blocks(claim)

    title = f"nmelab reproduce — {scale.name} scale"
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    from nmelab import __version__

    missing = run_ids - done
    compute_s = cpu_s = 0.0
    if len(results):
        mine = results[results["run_id"].isin(run_ids)].drop_duplicates("run_id")
        compute_s = float(pd.to_numeric(mine["elapsed_s"], errors="coerce").fillna(0).sum())
        cpu_s = float(pd.to_numeric(mine.get("cpu_s"), errors="coerce").fillna(0).sum())
    facts = [
        f"Generated {stamp} by nmelab {__version__} on {platform.node()} "
        f"({platform.machine()}, Python {platform.python_version()}).",
        f"Scale `{scale.name}`, {scale.num_seeds} seeds per grid point, experiments: "
        f"{', '.join(names)}.",
        f"Tasks: {len(run_ids)} ({len(run_ids) - len(missing)} finished, {len(missing)} "
        f"missing); stored compute time {compute_s / 60:.1f} min of task wall time, "
        f"{cpu_s / 60:.1f} min of CPU.",
        *_invocations(root),
    ]
    if info.get("failed"):
        facts.append(
            f"**{len(info['failed'])} task(s) failed** in this invocation (see their "
            "`error.json`); rerun the same command to retry them."
        )
    if missing:
        facts.append(
            "**Some runs are missing or damaged**: their claims are “not computed”. Rerun the "
            "same command to complete them."
        )
    head = [Block("h1", title), Block("ul", items=facts), *_verdict_tables(all_claims)]
    baseline_rows = _baselines(results, run_ids)
    if baseline_rows:
        head.append(Block("h2", "Baselines: plain SGD"))
        head.append(
            Block(
                "p",
                "Do the unregularised baselines train well? Test accuracy (mean [95 % CI] over "
                "seeds) and mean final train accuracy.",
            )
        )
        head.append(
            Block(
                "table",
                headers=[
                    "model",
                    "activation",
                    "epochs",
                    "seeds",
                    "test accuracy %",
                    "train accuracy %",
                    "status",
                ],  # fmt: skip
                rows=baseline_rows,
            )
        )
    if len(results):
        mine = results[results["run_id"].isin(run_ids) & results["status"].notna()]
        trained = mine[mine["runner"] == TRAIN_RUNNER]
        if len(trained):
            counts = trained["status"].value_counts().to_dict()
            head.append(
                Block(
                    "p",
                    "Seeds by outcome across all training runs: "
                    + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                    + ".",
                )
            )
    return Report(
        blocks=head + sections,
        claims=all_claims,
        figures=figures_by_exp,
        title=title,
        scale=scale,
        experiments=list(names),
    )


_INVOCATION_FIELDS = {
    "finished_at": str,
    "completed": int,
    "already_done": int,
    "failed": int,
    "sweep_s": (int, float),
    "wall_s": (int, float),
    "workers": int,
    "cpus": int,
}


_PROVENANCE = (
    ("machine", "machine {}"),
    ("nmelab_version", "nmelab {}"),
    ("commit", "commit `{}`"),
    ("command", "command `{}`"),
)
"""Optional invocation fields shown after the timings (older logs lack them)."""


def _invocations(root: Path) -> list[str]:
    """Lines describing the invocations logged in ``invocations.jsonl`` (bad lines: warned)."""
    import json

    path = root / INVOCATIONS_FILE
    if not path.exists():
        return []
    lines = []
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            r = json.loads(text)
            bad = [k for k, t in _INVOCATION_FIELDS.items() if not isinstance(r.get(k), t)]
        except (json.JSONDecodeError, AttributeError):
            r, bad = None, ["(not a JSON object)"]
        if bad:
            warnings.warn(
                f"{path}:{number}: skipped, bad or missing {', '.join(bad)}", stacklevel=2
            )
            continue
        load = r.get("load_average")
        load_text = (
            f", 1-min load average at the end {load:.1f}" if isinstance(load, int | float) else ""
        )
        lines.append(
            f"Invocation finished {r['finished_at']}: {r['completed']} task(s) run, "
            f"{r['already_done']} already done, {r['failed']} failed; sweep "
            f"{r['sweep_s'] / 60:.1f} min, total {r['wall_s'] / 60:.1f} min with "
            f"{r['workers']} worker process(es) on {r['cpus']} CPU(s){load_text}"
            + "".join("; " + text.format(r[key]) for key, text in _PROVENANCE if r.get(key))
            + "."
        )
    return lines


def write_report(report: Report, root: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``claims.json`` under ``root`` (atomically).

    ``claims.json`` holds the scale, its seed count and the experiments beside every claim, so
    that a published copy can be rebuilt from its ``results.csv`` (:func:`compute_claims`).

    Returns:
      ``{"md": path, "html": path, "json": path}``.
    """
    root = Path(root)
    paths = {"md": root / "report.md", "html": root / "report.html", "json": root / "claims.json"}
    write_text_atomic(paths["md"], to_markdown(report.blocks))
    write_text_atomic(paths["html"], to_html(report.blocks, root, report.title))
    write_json_atomic(
        paths["json"],
        {
            "title": report.title,
            "scale": report.scale.name,
            "num_seeds": report.scale.num_seeds,
            "experiments": report.experiments,
            "groups": C.GROUPS,
            "claims": [c.to_dict() for c in report.claims],
            "figures": report.figures,
        },
    )
    return paths
