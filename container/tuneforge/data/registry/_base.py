"""What most formats share; a format module overrides what differs (data/registry/__init__.py)."""

from __future__ import annotations

SFT = ("sft",)


class FormatDefaults:  # an SFT format of prompted rows
    methods = SFT
    description = ""  # how a refusal names the rows (preference formats)
    row_shape = ""  # a row, as a refusal shows it (preference formats)
    conversational = False
    generates = True
    free_text = False
    templated = False  # its prompts are rendered from a row's fields by a template
    uses_template_json = False
