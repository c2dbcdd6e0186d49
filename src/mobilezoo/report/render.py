"""Write the report's sections as Markdown (PNGs beside it) and as one self-contained HTML page.

The HTML references nothing outside itself: styles are inline, images are ``data:image/png;base64`` URIs, links are
in-page anchors, and a tiny inline script records on ``window.onload`` how many images decoded
(``<body data-images="loaded/total">``), which the headless-browser test reads back.
"""

from __future__ import annotations

import base64
import html
import re
from typing import TYPE_CHECKING

from mobilezoo.report.sections import Image, Section, Table

if TYPE_CHECKING:
    from mobilezoo.report.build import ReportData

TITLE = "mobilezoo comparison report"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table) -> str:
    lines = [f"**{t.caption}**", ""] if t.caption else []
    lines.append("| " + " | ".join(_md_cell(c) for c in t.columns) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(t.columns) - 1)) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.notes:
        lines.append("")
        lines += [f"- {n}" for n in t.notes]
    return "\n".join(lines)


def render_markdown(sections: list[Section], data: ReportData) -> str:
    """Markdown with relative links to the PNGs written beside it."""
    parts = [f"# {TITLE}", ""]
    parts += [f"- [{s.title}](#{s.id})" for s in sections]
    for s in sections:
        parts += ["", f'<a id="{s.id}"></a>', "", f"## {s.title}", ""]
        for block in s.blocks:
            if isinstance(block, Table):
                parts.append(_md_table(block))
            elif isinstance(block, Image):
                parts.append(f"![{block.alt}]({block.path.name})")
            else:
                parts.append(block)
            parts.append("")
    return "\n".join(parts).rstrip() + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 1em 0 0.4em; font-size: 0.85em; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.55em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f4f7; } tbody tr:nth-child(even) { background: #fafafa; }
ul.notes { font-size: 0.8em; color: #444; margin-top: 0.2em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
code { background: #f2f2f2; padding: 0 0.2em; }
.warning { color: #8a3b00; }
"""

# counts the images that decoded once the page has loaded; read by the headless-browser test
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
  document.body.dataset.images = ok + "/" + imgs.length;
});
"""


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_table(t: Table) -> str:
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{_inline(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in t.columns) + "</tr></thead><tbody>")
    out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in t.rows]
    out.append("</tbody></table>")
    if t.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{_inline(n)}</li>" for n in t.notes) + "</ul>")
    return "\n".join(out)


def _html_image(img: Image) -> str:
    data = base64.b64encode(img.path.read_bytes()).decode("ascii")
    alt = html.escape(img.alt, quote=True)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


def render_html(sections: list[Section], data: ReportData) -> str:
    """One self-contained page: inline CSS, base64 PNGs, in-page links only."""
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = []
    for s in sections:
        body.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>')
        for block in s.blocks:
            if isinstance(block, Table):
                body.append(_html_table(block))
            elif isinstance(block, Image):
                body.append(_html_image(block))
            else:
                cls = ' class="warning"' if block.startswith("Warning:") else ""
                body.append(f"<p{cls}>{_inline(block)}</p>")
        body.append("</section>")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{TITLE}</title><style>{_CSS}</style></head>",
            "<body>",
            f"<header><h1>{TITLE}</h1><nav>{nav}</nav></header>",
            *body,
            f"<script>{_SCRIPT}</script>",
            "</body></html>",
            "",
        ]
    )
