"""The report as plain data: sections of tables, text, images and a marked-up example. One builder
(sections.py, compare.py) makes it; two renderers (html.py, markdown.py) write it, so the page and
the markdown show the same tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Cell:
    text: str
    key: str | None = None  # the metrics.json key this number comes from (html: data-key)
    value: float | None = None  # its exact value (html: data-value), so a test can compare it
    css: str = ""  # better | worse | muted | strong


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    caption: str | None = None
    wide_text: bool = False  # long text cells (answers): top-aligned, wrapped


@dataclass
class Text:
    text: str
    css: str = ""  # note | ok | failed | warning


@dataclass
class Pre:
    text: str
    caption: str | None = None


@dataclass
class Marked:
    """Text runs, some highlighted (the tokens the loss learns from)."""
    runs: list[tuple[str, bool]]
    caption: str | None = None


@dataclass
class Rendering:
    png: bytes
    text_px: float  # the smallest text's font size in the PNG's own pixels


@dataclass
class Chart:
    """A chart drawn twice: wide for a desktop page, and narrower and taller, its legend below the
    plot, for a phone, where the wide one would shrink to a third and its text to 4-5 px."""
    desktop: Rendering
    phone: Rendering


@dataclass
class Image:
    png: bytes | Chart  # a picture as it is, or a chart drawn for both screen sizes
    alt: str
    caption: str | None = None
    name: str = "chart"  # html id: chart-loss, chart-lr, image-grid


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section]


def fmt(value, digits: int = 4) -> str:
    """Numbers for people: 4 significant decimals, thousands separated, no float noise."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def fmt_change(delta: float, digits: int = 4) -> str:
    """A difference, signed, rounded as fmt rounds the numbers it is the difference of (no
    exponent: a change of 0.0003 in a column of 4 decimals reads +0.0003)."""
    if delta == 0:
        return "no change"
    size = abs(delta)
    text = fmt(size, digits) if size >= 1e6 else f"{size:,.1f}" if size >= 1000 else f"{size:.{digits}f}"
    return ("+" if delta > 0 else "-") + text


def number(value, key: str | None = None, digits: int = 4, css: str = "") -> Cell:
    exact = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return Cell(fmt(value, digits), key=key if exact is not None else None, value=exact, css=css)


def change_cell(before, after, lower_better: bool, digits: int = 4) -> Cell:
    """One rounding and colouring of a change from `before` to `after` for every report row."""
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
        return Cell("")
    delta = after - before
    better = delta < 0 if lower_better else delta > 0
    css = "muted" if delta == 0 else ("better" if better else "worse")
    # A share of the baseline only where it reads as one: losses and perplexities, not scores that
    # start near zero (0.045 -> 1.0 is "+2122%", which says nothing the scores do not)
    relative = f" ({delta / before:+.1%})" if lower_better and delta and before and abs(delta / before) < 10 else ""
    return Cell(f"{fmt_change(delta, digits)}{relative}", css=css)
