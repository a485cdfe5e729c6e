"""domain: exactly one CSV, JSON/JSONL or TXT file of free text; what a channel is when it is
nothing else."""

from __future__ import annotations

from ..formats import read_domain
from ._base import FormatDefaults


class DomainFormat(FormatDefaults):
    name = prompt_kind = "domain"
    position = 3
    stage = "fallback"
    generates = False
    free_text = True
    read = staticmethod(read_domain)

    @staticmethod
    def detect(files, config) -> bool:
        return True


FORMAT = DomainFormat()
