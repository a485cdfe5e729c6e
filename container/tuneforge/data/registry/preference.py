"""preference: *.jsonl rows with a chosen and a rejected answer (dpo, orpo, simpo)."""

from __future__ import annotations

from ..preference import ROW_SHAPES, read_preference, sniff_preference
from ._base import FormatDefaults


class PreferenceFormat(FormatDefaults):
    name = "preference"
    description = "preference pairs (chosen/rejected)"
    row_shape = ROW_SHAPES
    position = 5
    stage = "rows"
    methods = ("dpo", "orpo", "simpo")
    prompt_kind = None  # chat for conversations, else instruction
    uses_template_json = True
    read = staticmethod(read_preference)

    @staticmethod
    def detect(files, config) -> bool:
        return sniff_preference(files) == "preference"


FORMAT = PreferenceFormat()
