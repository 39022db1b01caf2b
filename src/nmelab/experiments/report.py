"""The reproduction report: figures, the claims with their effects and verdicts, in Markdown and HTML.

:func:`build_report` computes every figure and claim of the requested experiments from what is
stored under the sweep root (nothing is trained here), and :func:`write_report` writes

* ``report.md`` - Markdown, figures linked relatively (``figures/fig2.png``);
* ``report.html`` - one self-contained file, every figure embedded as a base64 PNG, so it opens
  in any browser and can be mailed around;
* ``claims.json`` - the claims, effects, intervals and verdicts, machine-readable;
* ``figures/*.png`` and ``figures/*.pdf``.

The report never hides a non-reproduction: every claim of the requested experiments appears in
the summary table with its verdict, whatever it is, and missing or failed runs are listed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import json
import math
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nmelab.experiments import claims as C
from nmelab.experiments import registry, verdicts
from nmelab.experiments.sweep import write_json_atomic

__all__ = ["Report", "build_report", "write_report"]

VERDICT_COLORS = {
    verdicts.REPRODUCED: "#1a7f37",
    verdicts.NOT_REPRODUCED: "#cf222e",
    verdicts.INCONCLUSIVE: "#9a6700",
}

RULES_TEXT = (
    "Each effect is a linear contrast of per-grid-point means over seeds (a difference, a "
    "difference of differences, or a least-squares slope over the grid), with a 95 % "
    "Welch–Satterthwaite t-interval; a diverged seed is scored at chance accuracy (its "
    "predictions are meaningless), a collapsed seed at its measured accuracy. **Reproduced**: the "
    "interval excludes 0 on the paper's side. **Not reproduced**: it excludes 0 on the opposite "
    "side, or it lies entirely below the smallest effect of interest (1 accuracy point unless "
    "stated; 0.05 for cosines). **Inconclusive at this scale**: otherwise. Claims of *no* "
    "difference are reproduced when the interval lies inside ±margin and not reproduced when it "
    "excludes [−margin, margin]. The grids, seeds and rules were fixed before the runs; nothing was "
    "tuned to make a claim appear."
)


# --------------------------------------------------------------------------------------------
# blocks: one structure, two renderings
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Block:
    """A report element: ``kind`` in ``h1 h2 h3 p table img ul verdict``."""

    kind: str
    text: str = ""
    headers: Sequence[str] = ()
    rows: Sequence[Sequence[str]] = ()
    items: Sequence[str] = ()
    path: str = ""


def _md_inline(text: str) -> str:
    return text


def _html_inline(text: str) -> str:
    """Escape, then render ``**bold**`` and ``*em*`` and ``code``."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    for verdict, color in VERDICT_COLORS.items():
        out = out.replace(
            f"<strong>{html.escape(verdict)}</strong>",
            f'<strong style="color:{color}">{html.escape(verdict)}</strong>',
        )
    return out


def _to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            lines += ["#" * int(b.kind[1]) + " " + b.text, ""]
        elif b.kind == "p":
            lines += [b.text, ""]
        elif b.kind == "ul":
            lines += [f"- {item}" for item in b.items] + [""]
        elif b.kind == "table":
            esc = [h.replace("|", "\\|") for h in b.headers]
            lines.append("| " + " | ".join(esc) + " |")
            lines.append("|" + "|".join("---" for _ in b.headers) + "|")
            for row in b.rows:
                lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
            lines.append("")
        elif b.kind == "img":
            lines += [f"![{b.text}]({b.path})", ""]
    return "\n".join(lines)


def _to_html(blocks: Sequence[Block], root: Path, title: str) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;"
        "margin:2em auto;padding:0 1em;line-height:1.45;color:#1f2328}"
        "table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}"
        "th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}"
        "th{background:#f6f8fa}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}"
        "code{background:#f6f8fa;padding:0 3px}h2{border-bottom:1px solid #d0d7de;"
        "padding-bottom:0.2em;margin-top:2em}</style></head><body>",
    ]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            anchor = html.escape(b.text.split(":")[0].lower().replace(" ", "-").replace(".", ""))
            parts.append(f'<{b.kind} id="{anchor}">{_html_inline(b.text)}</{b.kind}>')
        elif b.kind == "p":
            parts.append(f"<p>{_html_inline(b.text)}</p>")
        elif b.kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{_html_inline(h)}</th>" for h in b.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{_html_inline(str(c))}</td>" for c in row) + "</tr>"
                for row in b.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "img":
            data = base64.b64encode((root / b.path).read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(b.text)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_html_inline(b.text)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    """A built report.

    Attributes:
      blocks: the content.
      claims: every claim, in order.
      figures: PNG paths relative to the output folder, per experiment.
      title: the title.
    """

    blocks: list[Block]
    claims: list[C.Claim]
    figures: dict[str, list[str]]
    title: str


def _fmt_interval(iv: verdicts.Interval, digits: int = 2) -> str:
    return iv.format(digits)


def _digits(unit: str) -> int:
    return 3 if unit in ("cosine", "") else 2


def _effect_text(claim: C.Claim) -> str:
    iv = claim.effect
    if not math.isfinite(iv.estimate):
        return "n/a (runs missing)"
    if iv.se == 0 and math.isinf(iv.df):
        return f"{iv.estimate:.3g} (exact)"
    return _fmt_interval(iv, _digits(claim.unit)) + (f" {claim.unit}" if claim.unit else "")


def _detail_text(name: str, iv: verdicts.Interval, unit: str) -> str:
    if not math.isfinite(iv.estimate):
        return f"{name}: n/a"
    if iv.se == 0 and math.isinf(iv.df):
        return f"{name}: {iv.estimate:.3g}"
    return f"{name}: {_fmt_interval(iv, _digits(unit))}"


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
        label = registry.activation_label(act, {"beta": beta} if beta > 0 else None)
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


def build_report(
    root: str | Path,
    names: Sequence[str],
    scale: registry.Scale,
    results: pd.DataFrame,
    *,
    sweep_info: Mapping[str, Any] | None = None,
) -> Report:
    """Compute every figure and claim of ``names`` from ``results`` and the files under ``root``.

    Args:
      root: the sweep root (the ``--out`` folder); figures go to ``root/figures``.
      names: experiment names, in report order.
      scale: the scale the runs were made at.
      results: :func:`nmelab.experiments.load_results` of ``root``.
      sweep_info: facts about the invocation for the header (e.g. ``wall_s``, ``workers``,
        ``failed``).

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
    missing_total: set[str] = set()
    mechanism_rows: list[dict[str, Any]] = []
    for name in names:
        exp = registry.get(name)
        pts = exp.points(scale)
        table = C.points_table(pts, results)
        ids = {spec.run_id for p in pts for spec in p.specs}
        run_ids |= ids
        done = set(results["run_id"]) if len(results) else set()
        missing_total |= ids - done
        claims = exp.claims(table, scale, root)
        try:
            has_data = bool((table["status"] != "missing").any())
            paths = exp.plot(table, fig_dir, scale, root) if has_data else []
        except Exception as err:  # noqa: BLE001 - a broken plot must not lose the report
            paths = []
            claims[0].notes.append(f"figure failed: {err!r}")
        pngs = [str(Path(p).relative_to(root)) for p in paths if str(p).endswith(".png")]
        figures_by_exp[name] = pngs
        all_claims += claims
        sections.append(Block("h2", f"{exp.title}"))
        sections.append(Block("p", f"*{exp.section}.* Setup: {exp.describe(scale)}"))
        for png in pngs:
            sections.append(Block("img", exp.title, path=png))
        if name == "mechanism":
            from nmelab.experiments import mechanism

            mechanism_rows = mechanism.summary_rows(scale, root)
            if mechanism_rows:
                rhos = mechanism.FIDELITY_RHOS
                headers = ["model", "activation", "stage (epoch)"] + [
                    f"cos at ρ={r:g}" for r in rhos
                ]
                rows = []
                for row in mechanism_rows:
                    cells = [
                        row["model"] or "MLP",
                        row["activation"],
                        f"{row['stage']} ({row['epoch']:g})",
                    ]
                    for r in rhos:
                        iv = row[r]
                        cells.append(
                            f"{iv.estimate:.3f} ± {iv.half_width:.3f}"
                            if math.isfinite(iv.estimate) and math.isfinite(iv.hi)
                            else (f"{iv.estimate:.3f}" if math.isfinite(iv.estimate) else "n/a")
                        )
                    rows.append(cells)
                sections.append(
                    Block(
                        "p",
                        "Cosine between ρHu and Δg (mean ± 95 % CI half-width "
                        "over seeds; 1 = the pointwise Hessian predicts the "
                        "SAM step's gradient change exactly).",
                    )
                )
                sections.append(Block("table", headers=headers, rows=rows))
        for claim in claims:
            sections.append(Block("h3", f"Claim {claim.key} ({claim.section})"))
            sections.append(Block("p", f"*Paper:* {claim.statement}"))
            sections.append(
                Block(
                    "p",
                    f"*Measured:* {claim.effect_name} = "
                    f"{_effect_text(claim)} → **{claim.verdict}**",
                )
            )
            items = [_detail_text(n, iv, claim.unit) for n, iv in claim.details]
            items += [f"Rule: {claim.rule}."] + [f"Note: {n}" for n in claim.notes]
            sections.append(Block("ul", items=items))
        if name == "mechanism":
            from nmelab.experiments import mechanism

            words = {
                verdicts.REPRODUCED: "holds",
                verdicts.NOT_REPRODUCED: "does not hold",
                verdicts.INCONCLUSIVE: "is undecided (inconclusive)",
            }
            for c in (c for c in claims if c.key.startswith("mechanism")):
                model = f" ({c.key.split('-', 1)[1]})" if "-" in c.key else ""
                sections.append(
                    Block(
                        "p",
                        f"**Premise at the {scale.name} scale{model}: at the pre-registered cell "
                        f"(ρ = {mechanism.PRIMARY_RHO:g}, end of training) the paper's premise "
                        f"{words[c.verdict]}** — {c.effect_name} = {_effect_text(c)}.",
                    )
                )
            for sentence in mechanism.premise_text(scale, root):
                sections.append(Block("p", sentence[0].upper() + sentence[1:]))

    title = f"nmelab reproduce — {scale.name} scale"
    head: list[Block] = [Block("h1", title)]
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    from nmelab import __version__

    compute_s = 0.0
    if len(results):
        mine = results[results["run_id"].isin(run_ids)].drop_duplicates("run_id")
        compute_s = float(pd.to_numeric(mine["elapsed_s"], errors="coerce").fillna(0).sum())
    facts = [
        f"Generated {stamp} by nmelab {__version__} on {platform.node()} "
        f"({platform.machine()}, Python {platform.python_version()}).",
        f"Scale `{scale.name}`, {scale.num_seeds} seeds per grid point, experiments: "
        f"{', '.join(names)}.",
        f"Tasks: {len(run_ids)} ({len(run_ids) - len(missing_total)} finished, "
        f"{len(missing_total)} missing); stored compute time {compute_s / 60:.1f} min.",
    ]
    for line in _invocations(root):
        facts.append(line)
    if info.get("failed"):
        facts.append(
            f"**{len(info['failed'])} task(s) failed** in this invocation (see their "
            "`error.json`); rerun the same command to retry them."
        )
    if missing_total:
        facts.append(
            "**Some runs are missing**: their claims use only the finished runs or are "
            "reported as n/a. Rerun the same command to complete them."
        )
    head.append(Block("ul", items=facts))
    head.append(Block("h2", "Verdicts"))
    counts = {v: sum(c.verdict == v for c in all_claims) for v in VERDICT_COLORS}
    head.append(Block("p", ", ".join(f"**{v}**: {n}" for v, n in counts.items()) + "."))
    head.append(
        Block(
            "table",
            headers=["claim", "where", "the paper says", "measured effect [95 % CI]", "verdict"],
            rows=[
                [
                    c.key,
                    c.section,
                    c.statement,
                    f"{c.effect_name}: {_effect_text(c)}",
                    f"**{c.verdict}**",
                ]
                for c in all_claims
            ],
        )
    )
    head.append(Block("p", "How verdicts are decided: " + RULES_TEXT))
    baseline_rows = _baselines(results, run_ids)
    if baseline_rows:
        head.append(Block("h2", "Baselines: plain SGD"))
        head.append(
            Block(
                "p",
                "Do the unregularised baselines train well? Test accuracy (mean "
                "[95 % CI] over seeds) and mean final train accuracy.",
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
                ],
                rows=baseline_rows,
            )
        )
    if len(results):
        mine = results[results["run_id"].isin(run_ids) & results["status"].notna()]
        trained = mine[mine["runner"] == registry.TRAIN_RUNNER]
        if len(trained):
            status_counts = trained["status"].value_counts().to_dict()
            head.append(
                Block(
                    "p",
                    "Seeds by outcome across all training runs: "
                    + ", ".join(f"{k}: {v}" for k, v in sorted(status_counts.items()))
                    + ".",
                )
            )
    blocks = head + sections
    return Report(blocks=blocks, claims=all_claims, figures=figures_by_exp, title=title)


def _invocations(root: Path) -> list[str]:
    """Lines describing the training invocations logged in ``invocations.jsonl``."""
    path = root / "invocations.jsonl"
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            r = json.loads(text)
        except json.JSONDecodeError:
            continue
        load = r.get("load_average")
        load_text = f", 1-min load average at the end {load:.1f}" if load is not None else ""
        lines.append(
            f"Invocation finished {r['finished_at']}: {r['completed']} task(s) run, "
            f"{r['already_done']} already done, {r['failed']} failed; sweep "
            f"{r['sweep_s'] / 60:.1f} min, total {r['wall_s'] / 60:.1f} min with "
            f"{r['workers']} worker process(es) on {r['cpus']} CPU(s){load_text}."
        )
    return lines


def write_report(report: Report, root: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``claims.json`` under ``root`` (atomically).

    Returns:
      ``{"md": path, "html": path, "json": path}``.
    """
    root = Path(root)
    paths = {"md": root / "report.md", "html": root / "report.html", "json": root / "claims.json"}
    _write_text(paths["md"], _to_markdown(report.blocks))
    _write_text(paths["html"], _to_html(report.blocks, root, report.title))
    write_json_atomic(
        paths["json"],
        {
            "title": report.title,
            "claims": [c.to_dict() for c in report.claims],
            "figures": report.figures,
        },
    )
    return paths


def _write_text(path: Path, text: str) -> None:
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def claims_json(report: Report) -> str:
    """The claims as a JSON string."""
    return json.dumps([c.to_dict() for c in report.claims], indent=1)
