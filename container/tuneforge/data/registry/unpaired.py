"""unpaired: *.jsonl prompt/completion rows with a true/false label (kto)."""

from __future__ import annotations

from ..preference import UNPAIRED_SHAPE, read_unpaired, sniff_preference
from ._base import FormatDefaults


class UnpairedFormat(FormatDefaults):
    name = "unpaired"
    description = "unpaired rows (prompt/completion/label)"
    row_shape = UNPAIRED_SHAPE
    position = 6
    stage = "rows"
    methods = ("kto",)
    prompt_kind = None  # chat for conversations, else instruction
    read = staticmethod(read_unpaired)

    @staticmethod
    def detect(files, config) -> bool:
        return sniff_preference(files) == "unpaired"


FORMAT = UnpairedFormat()
