"""The published results (``docs/results/<scale>/``) never drift from their data.

For every published scale, the claims are rebuilt from the committed ``results.csv`` (through
``load_results`` and ``compute_claims``, the report's own code) and their verdicts must equal
those printed in the committed ``report.md``; the README's verdict table must equal the
committed ``claims.json`` of each scale.

Four experiments read arrays from their run folders, which are not published (``fig1`` and
``b4``: exact computations; ``mechanism``: the curvature records; ``sparsity``: the exact NME
diagonals). Their claims cannot be rebuilt from ``results.csv``: the test checks that they come
out "not computed" from it (so none is silently compared), and skips Holm's verdicts in the
report groups that hold one of them (Holm's family would differ). Every primary claim is rebuilt.
"""

import json
import re
from pathlib import Path

import pytest

from nmelab.experiments import compute_claims, get_scale, load_results

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = sorted(
    p for p in (ROOT / "docs" / "results").glob("*") if (p / "claims.json").is_file()
)
ARRAY_EXPERIMENTS = frozenset({"fig1", "b4", "mechanism", "sparsity"})
"""Experiments whose claims read arrays from run folders (module docstring)."""


def _printed_verdicts(report: Path) -> dict[str, tuple[str, str]]:
    """``{claim: (verdict, after Holm)}`` from the verdict tables of a report.md."""
    text = report.read_text(encoding="utf-8")
    section = text.split("## Verdicts", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 7 and cells[0] not in ("claim", "---"):
            rows[cells[0]] = (cells[5].strip("*"), cells[6])
    return rows


def test_results_are_published_for_quick_and_small():
    assert {p.name for p in PUBLISHED} >= {"quick", "small"}


@pytest.mark.parametrize("folder", PUBLISHED, ids=lambda p: p.name)
def test_published_verdicts_rebuild_from_results_csv(folder):
    published = json.loads((folder / "claims.json").read_text(encoding="utf-8"))
    scale = get_scale(published["scale"], "DATA_DIR", published["num_seeds"])
    results = load_results(folder / "results.csv")
    rebuilt = compute_claims(published["experiments"], scale, results, folder)
    printed = _printed_verdicts(folder / "report.md")
    claims = [(name, c) for name, cs in rebuilt.items() for c in cs]
    assert sorted(printed) == sorted(c.key for _, c in claims)
    array_groups = {c.group for name, c in claims if name in ARRAY_EXPERIMENTS}
    for name, claim in claims:
        if name in ARRAY_EXPERIMENTS:
            assert claim.verdict == "not computed", claim.key
            continue
        verdict, holm = printed[claim.key]
        assert verdict == claim.verdict, claim.key
        if claim.group not in array_groups:
            assert holm == claim.holm_verdict, claim.key
    assert "primary" not in array_groups


def test_readme_verdict_table_matches_the_published_claims():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- published-verdicts -->", 2)[1]
    verdicts = {
        folder.name: {
            c["key"]: c["verdict"]
            for c in json.loads((folder / "claims.json").read_text(encoding="utf-8"))["claims"]
        }
        for folder in PUBLISHED
    }
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("|")
    ]
    header, body = rows[0], rows[2:]
    columns = {
        i: h.split()[0] for i, h in enumerate(header) if re.fullmatch(r"\w+ \(\d+ seeds\)", h)
    }
    assert sorted(columns.values()) == ["quick", "small"]
    keys = {k for claims in verdicts.values() for k in claims}
    assert sorted(r[0] for r in body) == sorted(keys)
    for row in body:
        for i, scale in columns.items():
            assert row[i] == verdicts[scale].get(row[0], "–"), (row[0], scale)
