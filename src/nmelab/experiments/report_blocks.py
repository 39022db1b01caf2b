"""Report content as blocks with two renderings: Markdown and one self-contained HTML file."""

from __future__ import annotations

import base64
import dataclasses
import html
import re
from collections.abc import Sequence
from pathlib import Path

from nmelab.experiments import verdicts

__all__ = ["VERDICT_COLORS", "Block", "to_html", "to_markdown"]

VERDICT_COLORS = {
    verdicts.REPRODUCED: "#1a7f37",
    verdicts.NOT_REPRODUCED: "#cf222e",
    verdicts.INCONCLUSIVE: "#9a6700",
    verdicts.NOT_COMPUTED: "#57606a",
}


@dataclasses.dataclass
class Block:
    """A report element: ``kind`` in ``h1 h2 h3 p table img ul verdict``."""

    kind: str
    text: str = ""
    headers: Sequence[str] = ()
    rows: Sequence[Sequence[str]] = ()
    items: Sequence[str] = ()
    path: str = ""


def _html_inline(text: str) -> str:
    """Escape, then render ``**bold**`` and ``*em*`` and ``code``."""
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


def to_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown (figures linked relatively)."""
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


def to_html(blocks: Sequence[Block], root: Path, title: str) -> str:
    """The blocks as one HTML page, every figure under ``root`` embedded as base64 PNG."""
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
