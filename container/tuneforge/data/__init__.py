"""Data: detect the format of a channel, read rows, and turn them into token ids with label masks
(kept in memory by tokenize_examples, or in a memory-mapped Arrow folder by arrow.py).

The tokenizing half (torch) loads on first use, so that config.py can read the format registry
(data/registry) without it."""

import importlib

from .formats import Example, LoadedData, read_channel, read_job_channels
from .split import select_and_split, validation_overlap

_LAZY = {"arrow": ".arrow", "Collator": ".tokenize", "TokenizedData": ".tokenize", "tokenize_examples": ".tokenize"}

__all__ = ["Example", "LoadedData", "read_channel", "read_job_channels", "select_and_split", "validation_overlap", "Collator",
           "TokenizedData", "tokenize_examples", "arrow"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name], __name__)
    return module if name == "arrow" else getattr(module, name)
