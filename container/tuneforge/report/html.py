"""A Document as one self-contained HTML page: inline CSS, images as data: URIs, no script and no
external URL, so it opens offline in any browser and can be attached or archived as it is.

It fits a phone (390 px) as well as a desktop: tables scroll sideways inside their own box, the
answers table becomes one card per row, charts switch to their phone rendering (a <picture>
source), and text breaks between words (or after a path's "/"), never inside one."""

from __future__ import annotations

import base64
from html import escape

from .doc import Cell, Chart, Document, Image, Marked, Pre, Table, Text

PHONE_WIDTH = 900  # px: at or below it, the phone rendering of each chart and the narrow layout
CSS = """
body { font: 15px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; color: #1d2329;
       margin: 0; background: #f4f5f7; -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 2px; overflow-wrap: break-word; }
.subtitle { color: #5c6670; margin: 0 0 12px; overflow-wrap: break-word; }
h2 { font-size: 20px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e6ea; }
p { overflow-wrap: break-word; }
.scroll { overflow-x: auto; max-width: 100%; margin: 6px 0 10px;
          /* a shadow at an edge with more table beyond it (the white covers scroll with the table) */
          background: linear-gradient(to right, #fff 30%, rgba(255, 255, 255, 0)),
                      linear-gradient(to left, #fff 30%, rgba(255, 255, 255, 0)) 100% 0,
                      radial-gradient(farthest-side at 0 50%, rgba(0, 0, 0, .25), rgba(0, 0, 0, 0)),
                      radial-gradient(farthest-side at 100% 50%, rgba(0, 0, 0, .25), rgba(0, 0, 0, 0)) 100% 0;
          background-repeat: no-repeat; background-size: 40px 100%, 40px 100%, 14px 100%, 14px 100%;
          background-attachment: local, local, scroll, scroll; }
table { border-collapse: collapse; }
th, td { border: 1px solid #dde1e6; padding: 5px 10px; text-align: left; vertical-align: middle; }
th { background: rgba(20, 50, 80, .075); font-weight: 600; }  /* see-through: the scroll shadow shows */
tr:nth-child(even) td { background: rgba(20, 50, 80, .02); }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: "DejaVu Sans Mono", Menlo, monospace;
         font-size: 14px; white-space: nowrap; }
table.wide { width: 100%; table-layout: fixed; }
table.wide td { vertical-align: top; white-space: pre-wrap; overflow-wrap: break-word; font-size: 14px; }
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
pre { background: #f6f8fa; border: 1px solid #e3e6ea; border-radius: 6px; padding: 10px 12px; overflow-x: auto;
      white-space: pre-wrap; font: 13px/1.4 "DejaVu Sans Mono", Menlo, monospace; }
mark { background: #ffe58f; padding: 0; }
img { max-width: 100%; height: auto; display: block; margin: 6px 0 14px; border: 1px solid #e3e6ea; }
picture img { width: 100%; max-width: 100%; }
@media (max-width: 600px) {
  main { padding: 12px 14px 32px; }
  h1 { font-size: 21px; }
  h2 { font-size: 18px; margin-top: 24px; }
  th, td { padding: 4px 6px; }
  /* the answers: one card per row, each cell under its column's name */
  table.wide, table.wide tbody, table.wide tr, table.wide td { display: block; width: auto; }
  table.wide thead { display: none; }
  table.wide tr { border: 1px solid #dde1e6; border-radius: 6px; margin: 0 0 10px; }
  table.wide td { border: 0; border-top: 1px solid #eef1f4; }
  table.wide td:first-child { border-top: 0; }
  table.wide td::before { content: attr(data-label); display: block; color: #5c6670; font-size: 12px;
                          font-weight: 600; white-space: normal; }
}
"""


def _cell(cell: Cell, header: bool = False, label: str = "") -> str:
    classes = [c for c in (cell.css, "num" if cell.value is not None else "") if c]
    attrs = f' class="{" ".join(classes)}"' if classes else ""
    if cell.key is not None and cell.value is not None:
        attrs += f' data-key="{escape(cell.key)}" data-value="{cell.value!r}"'
    if label:
        attrs += f' data-label="{escape(label)}"'
    tag = "th" if header else "td"
    return f"<{tag}{attrs}>{breakable(cell.text)}</{tag}>"


def breakable(text: str) -> str:
    """Escaped text that may wrap after a path's "/" (<wbr>): a long path in a narrow column or on a
    phone breaks between its folders, not inside a name. snake_case names stay whole (searchable
    as written); a table of them scrolls in its own box."""
    return escape(text).replace("/", "/<wbr>")


def _table(table: Table) -> str:
    parts = []
    if table.caption:
        parts.append(f'<p class="caption">{escape(table.caption)}</p>')
    parts.append('<div class="scroll"><table class="wide">' if table.wide_text else '<div class="scroll"><table>')
    if any(table.headers):
        parts.append("<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in table.headers) + "</tr></thead>")
    labels = table.headers if table.wide_text else [""] * len(table.headers)
    parts.append("<tbody>")
    parts += ["<tr>" + "".join(_cell(c, label=l) for c, l in zip(row, labels)) + "</tr>" for row in table.rows]
    parts.append("</tbody></table></div>")
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
        caption = f'<p class="caption">{escape(block.caption)}</p>' if block.caption else ""
        return caption + _image(block)
    raise TypeError(f"unknown report block {type(block).__name__}")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _image(block: Image) -> str:
    """An image; a Chart as a <picture> whose phone rendering the browser takes on narrow screens.
    data-text-px: the smallest text's size in each rendering's own pixels (the browser test scales
    it by the width the chart is shown at)."""
    attrs = f'id="{escape(block.name)}" alt="{escape(block.alt)}"'
    if not isinstance(block.png, Chart):
        return f'<img {attrs} src="{_data_uri(block.png)}">'
    chart = block.png
    return (f'<picture><source media="(max-width: {PHONE_WIDTH}px)" srcset="{_data_uri(chart.phone.png)}">'
            f'<img {attrs} data-text-px="{chart.desktop.text_px:.2f}" data-phone-text-px="{chart.phone.text_px:.2f}" '
            f'src="{_data_uri(chart.desktop.png)}"></picture>')


def render_html(document: Document) -> str:
    body = [f"<h1>{breakable(document.title)}</h1>", f'<p class="subtitle">{breakable(document.subtitle)}</p>']
    for section in document.sections:
        body.append(f"<section><h2>{escape(section.title)}</h2>")
        body += [_block(b) for b in section.blocks]
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(document.title)}</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{CSS}</style></head>\n"
            "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")
