"""The data formats, one module each in this folder: adding a format is adding a module here that
defines FORMAT (an object with the DataFormat attributes), plus its test. The registry finds them;
the `data_format` hyperparameter's choices, detection and every question about a format
(which methods train on it, whether it is a conversation, whether the model answers its prompts)
are asked of it instead of comparing names."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Protocol

# Detection asks the formats stage by stage: the rows' own shape, then the instruction_tuned /
# chat_dataset flags, then the files' kind, then the format every channel can be read as.
STAGES = ("rows", "flag", "files", "fallback")


class DataFormat(Protocol):
    name: str  # the data_format value, LoadedData.format and metrics.json's data format
    position: int  # where it is listed among data_format's choices
    stage: str  # which of STAGES detects it
    methods: tuple[str, ...]  # the training methods that train on it
    description: str  # how a refusal names the rows
    row_shape: str  # a row, as a refusal shows it
    prompt_kind: str | None  # the PromptFormat kind its rows get (None: the rows decide, chat or instruction)
    conversational: bool  # rows are conversations rendered by the chat template
    generates: bool  # the model answers its prompts (ROUGE samples, the knowledge check); not free text
    free_text: bool  # tokenized as running text, cut into segments, no prompt/label split
    templated: bool  # its prompts are rendered from a row's fields (serving fills the template too)
    uses_template_json: bool  # a .json file in the channel is its prompt template, not an ignored file

    def detect(self, files: list[Path], config) -> bool:
        """Whether the channel's files (in this format's stage) are this format."""

    def read(self, folder: Path, files: list[Path], config, prompt):
        """The channel's rows as LoadedData; `prompt` is the train channel's, for validation."""


def _discover() -> dict[str, DataFormat]:
    found = [importlib.import_module(f"{__name__}.{info.name}").FORMAT
             for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    return {fmt.name: fmt for fmt in sorted(found, key=lambda fmt: fmt.position)}


FORMATS = _discover()
FORMAT_NAMES = tuple(FORMATS)


def data_format(name: str) -> DataFormat:
    return FORMATS[name]


def detection_order() -> list[DataFormat]:
    return sorted(FORMATS.values(), key=lambda fmt: (STAGES.index(fmt.stage), fmt.position))


def formats_for(method: str) -> list[str]:
    return [fmt.name for fmt in FORMATS.values() if method in fmt.methods]
