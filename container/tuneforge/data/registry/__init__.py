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


def check_method(fmt: str, config, where: str) -> None:
    """A format the chosen training_method cannot train on is refused, naming the one that can."""
    from ...errors import DataError

    method = getattr(config, "training_method", "sft")
    rows = data_format(fmt)
    if "sft" not in rows.methods and method not in rows.methods:  # a format only preference methods train on
        can = " or ".join(f"training_method={m}" for m in rows.methods)
        raise DataError(f"the rows are {rows.description}, which training_method={method} cannot train on",
                        where=where, fix=f"set {can} to train on them (docs/preference.md)"
                                         + (", or give prompt/completion rows or conversations for sft"
                                            if method == "sft" else ""))
    needed = next((f for f in FORMATS.values() if "sft" not in f.methods and method in f.methods), None)
    if needed and fmt != needed.name:
        can = " or ".join(rows.methods)
        raise DataError(f"training_method={method} needs {needed.description} and the channel holds {fmt} data, "
                        f"which training_method={can} trains on", where=where,
                        fix=f"set training_method={can.split(' or ')[0]} for this data, or write rows as {needed.row_shape}")
