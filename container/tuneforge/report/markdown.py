"""A Document as markdown (GitHub tables) for terminals and pull requests. Charts are not
embedded: the markdown links the HTML page beside it (report.html, compare.html), which has them."""

from __future__ import annotations

from .doc import Document, Image, Marked, Pre, Table, Text

CELL_CHARS = 160


def _cell(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + " ..."


def _table(table: Table) -> list[str]:
    headers = [h or " " for h in table.headers]
    lines = [f"_{table.caption}_", ""] if table.caption else []
    lines += ["| " + " | ".join(headers) + " |",
              "|" + "|".join("---:" if i and _numeric(table, i) else "---" for i in range(len(headers))) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join(_cell(c.text) for c in row) + " |")
    return lines + [""]


def _numeric(table: Table, column: int) -> bool:
    return any(len(row) > column and row[column].value is not None for row in table.rows)


def _fence(text: str) -> list[str]:
    fence = "````" if "```" in text else "```"
    return [fence, text, fence, ""]


def _block(block, html_name: str) -> list[str]:
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Text):
        return [f"**{block.text}**" if block.css in ("ok", "failed", "warning") else block.text, ""]
    if isinstance(block, Pre):
        return ([f"_{block.caption}_", ""] if block.caption else []) + _fence(block.text)
    if isinstance(block, Marked):
        body = "".join(f"⟦{t}⟧" if trained else t for t, trained in block.runs)
        caption = (block.caption or "").replace("highlighted", "between ⟦ ⟧")
        return ([f"_{caption}_", ""] if caption else []) + _fence(body)
    if isinstance(block, Image):
        saved = getattr(block, "file", "")  # a picture saved beside the report (image_sections.SavedImage)
        if saved:
            return [f"![{block.alt}]({saved})", ""] + ([f"_{block.caption}_", ""] if block.caption else [])
        return [f"_{block.alt}: see [{html_name}]({html_name})_", ""]
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_markdown(document: Document, html_name: str = "report.html") -> str:
    lines = [f"# {document.title}", "", document.subtitle, ""]
    for section in document.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += _block(block, html_name)
    return "\n".join(lines).rstrip() + "\n"
