"""instruction: *.jsonl rows + optional template.json ({"prompt", "completion"} with {field}s)."""

from __future__ import annotations

from ..formats import read_instruction
from ._base import FormatDefaults


class InstructionFormat(FormatDefaults):
    name = prompt_kind = "instruction"
    position = 1
    templated = True
    stage = "flag"
    uses_template_json = True
    read = staticmethod(read_instruction)

    @staticmethod
    def detect(files, config) -> bool:
        return bool(config.instruction_tuned)


FORMAT = InstructionFormat()
