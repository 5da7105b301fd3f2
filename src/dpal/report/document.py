"""A report document written once, read two ways: markdown and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Doc:
    """Blocks rendered to both markdown and HTML: heading, text, table, image, details."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[Any]], *, folded: str = "") -> None:
        self.blocks.append(("table", (header, rows, folded)))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", (path, caption)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "table":
                header, rows, folded = value
                lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
                if folded:
                    lines = [f"<details><summary>{folded}</summary>", "", *lines, "", "</details>"]
                out.append("\n".join(lines))
            else:
                path, caption = value
                out.append(f"![{caption}]({path.name})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body = []
        for kind, value in self.blocks:
            if kind == "h":
                body.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "p":
                body.append(f"<p>{inline_markup(value)}</p>")
            elif kind == "table":
                header, rows, folded = value
                t = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                for r in rows:
                    t += "<tr>" + "".join(f"<td>{inline_markup(str(c))}</td>" for c in r) + "</tr>"
                t += "</table>"
                if folded:
                    t = f"<details><summary>{html.escape(folded)}</summary>{t}</details>"
                body.append(t)
            else:
                path, caption = value
                data = base64.b64encode(path.read_bytes()).decode()
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
            "line-height:1.45}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
            "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#eee}"
            "img{max-width:100%}figcaption{font-style:italic;color:#444}code{background:#f3f3f3}"
        )
        return (
            f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>'
            f"{html.escape(title)}</title><style>{style}</style></head><body>"
            + "\n".join(body)
            + "</body></html>\n"
        )


def inline_markup(text: str) -> str:
    """Markdown's `code` and **bold** in HTML; everything else escaped."""
    import re

    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)


def markdown_into(doc: Doc, text: str) -> None:
    """The tables and paragraphs of a results.md, as blocks (so the HTML shows real tables)."""
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.strip().splitlines() if line.strip()]
        if lines and all(line.startswith("|") for line in lines):
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
            body = [r for r in cells[1:] if not all(set(c) <= set("-: ") for c in r)]
            doc.table(cells[0], body)
        elif lines:
            doc.p(" ".join(lines))
