"""A Document as one self-contained HTML page: inline CSS, images as data: URIs, no script and no
external URL, so it opens offline in any browser and can be attached or archived as it is."""

from __future__ import annotations

import base64
from html import escape

from .doc import Cell, Document, Image, Marked, Pre, Table, Text

CSS = """
body { font: 15px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; color: #1d2329;
       margin: 0; background: #f4f5f7; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 2px; }
.subtitle { color: #5c6670; margin: 0 0 12px; word-break: break-all; }
h2 { font-size: 20px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e6ea; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { border: 1px solid #dde1e6; padding: 5px 10px; text-align: left; vertical-align: middle; }
th { background: #eef1f4; font-weight: 600; }
tr:nth-child(even) td { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: "DejaVu Sans Mono", Menlo, monospace;
         font-size: 14px; }
table.wide { width: 100%; table-layout: fixed; }
table.wide td { vertical-align: top; white-space: pre-wrap; word-break: break-word; font-size: 14px; }
td.strong { font-weight: 600; }
td.muted { color: #8a939c; }
td.better { color: #1e7b34; font-weight: 600; }
td.worse { color: #b42318; font-weight: 600; }
.caption { color: #5c6670; font-size: 13px; margin: 2px 0 4px; }
p.ok, p.failed { font-size: 17px; font-weight: 600; padding: 10px 14px; border-radius: 6px; }
p.ok { background: #e7f6ec; color: #1e6b34; }
p.failed { background: #fdecea; color: #9b1c13; }
p.note { color: #5c6670; }
p.warning { background: #fff4e5; color: #8a4b00; padding: 8px 12px; border-radius: 6px; }
pre { background: #f6f8fa; border: 1px solid #e3e6ea; border-radius: 6px; padding: 10px 12px;
      white-space: pre-wrap; word-break: break-word; font: 13px/1.4 "DejaVu Sans Mono", Menlo, monospace; }
mark { background: #ffe58f; padding: 0; }
img { max-width: 100%; height: auto; display: block; margin: 6px 0 14px; border: 1px solid #e3e6ea; }
"""


def _cell(cell: Cell, header: bool = False) -> str:
    classes = [c for c in (cell.css, "num" if cell.value is not None else "") if c]
    attrs = f' class="{" ".join(classes)}"' if classes else ""
    if cell.key is not None and cell.value is not None:
        attrs += f' data-key="{escape(cell.key)}" data-value="{cell.value!r}"'
    tag = "th" if header else "td"
    return f"<{tag}{attrs}>{escape(cell.text)}</{tag}>"


def _table(table: Table) -> str:
    parts = []
    if table.caption:
        parts.append(f'<p class="caption">{escape(table.caption)}</p>')
    parts.append('<table class="wide">' if table.wide_text else "<table>")
    if any(table.headers):
        parts.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in table.headers) + "</tr>")
    parts += ["<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows]
    parts.append("</table>")
    return "\n".join(parts)


def _block(block) -> str:
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Text):
        return f'<p class="{block.css}">{escape(block.text)}</p>' if block.css else f"<p>{escape(block.text)}</p>"
    if isinstance(block, Pre):
        caption = f'<p class="caption">{escape(block.caption)}</p>' if block.caption else ""
        return f"{caption}<pre>{escape(block.text)}</pre>"
    if isinstance(block, Marked):
        caption = f'<p class="caption">{escape(block.caption)}</p>' if block.caption else ""
        body = "".join(f"<mark>{escape(t)}</mark>" if trained else escape(t) for t, trained in block.runs)
        return f"{caption}<pre>{body}</pre>"
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        caption = f'<p class="caption">{escape(block.caption)}</p>' if block.caption else ""
        return f'{caption}<img id="{escape(block.name)}" alt="{escape(block.alt)}" src="data:image/png;base64,{data}">'
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_html(document: Document) -> str:
    body = [f"<h1>{escape(document.title)}</h1>", f'<p class="subtitle">{escape(document.subtitle)}</p>']
    for section in document.sections:
        body.append(f"<section><h2>{escape(section.title)}</h2>")
        body += [_block(b) for b in section.blocks]
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(document.title)}</title><style>{CSS}</style></head>\n"
            "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")
