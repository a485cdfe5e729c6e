"""table: CSV or Parquet files with exactly the columns input and output (Autopilot)."""

from __future__ import annotations

from ..formats import looks_like_table, read_table
from ._base import FormatDefaults


class TableFormat(FormatDefaults):
    name = prompt_kind = "table"
    position = 4
    templated = True
    stage = "files"
    read = staticmethod(read_table)
    detect = staticmethod(looks_like_table)


FORMAT = TableFormat()
