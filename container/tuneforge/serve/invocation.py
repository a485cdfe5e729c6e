"""What one HTTP request asks for, whatever its format: the unit payloads hand to generation."""

from __future__ import annotations

from dataclasses import dataclass, field

from .engine import GenerationRequest


@dataclass
class Invocation:
    """One HTTP request: its format, one GenerationRequest per prompt, and answer options."""

    kind: str  # tgi | dialog | flan | chat | completion | text | responses
    requests: list[GenerationRequest]
    prompt_texts: list[str]
    stream: bool = False
    list_input: bool = False  # the caller sent a list, so it gets a list back
    options: dict = field(default_factory=dict)
