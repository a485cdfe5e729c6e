"""Data: detect the format of a channel, read rows, and turn them into token ids with label masks
(kept in memory by tokenize_examples, or in a memory-mapped Arrow folder by arrow.py)."""

from . import arrow
from .formats import Example, LoadedData, read_channel, read_job_channels
from .split import select_and_split, validation_overlap
from .tokenize import Collator, TokenizedData, tokenize_examples

__all__ = ["Example", "LoadedData", "read_channel", "read_job_channels", "select_and_split", "validation_overlap", "Collator",
           "TokenizedData", "tokenize_examples", "arrow"]
