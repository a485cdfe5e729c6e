"""Tokenized data as a memory-mapped Arrow dataset (`datasets.Dataset`) in a node-local folder.

`write` tokenizes the rows chunk by chunk (tokenize.py) straight into an Arrow file, so even the
process that tokenizes never holds all rows as Python lists, and saves the counts the data report
needs beside it (stats.json). `open_tokenized` maps that file: every rank of a node shares its
pages instead of holding a copy. The recipe has the node's local main process write while the
node's other ranks wait, then every rank opens it. A folder whose key (the rows, the tokenizer,
the options) matches is reused instead of tokenized again (a restarted job on the same disk).

Columns: input_ids, labels and, for domain blocks, segment_lengths (batching.py reads the lengths
from the Arrow offsets). Row i is the i-th feature tokenize_examples returns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from .registry import data_format
from .tokenize import TokenizedData, tokenize_examples

TOKENS_FILE = "tokens.arrow"
STATS_FILE = "stats.json"  # written last: a folder with it is complete
log = logging.getLogger(__name__)


def cache_folder(base: Path, name: str) -> Path:
    """Where a node keeps the tokenized `name` data (train, validation): under the job's base folder
    (SageMaker uploads only model/, output/ and checkpoints/ from it), one folder per host, so
    hosts that share a mounted base folder never write the same files."""
    return Path(base) / ".tuneforge-tokenized" / socket.gethostname() / name


def cache_key(examples, tokenizer, prompt_format, options: dict) -> str:
    """What the tokenized rows depend on: the rows' text, the tokenizer and the tokenizing options."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    identity = [backend.to_str() if backend is not None else repr(tokenizer.get_vocab()),
                repr(tokenizer.all_special_ids), str(getattr(tokenizer, "chat_template", None)),
                json.dumps(prompt_format.to_dict(), sort_keys=True, default=str),
                json.dumps({k: options[k] for k in sorted(options) if k != "workers"})]
    for part in identity:
        h.update(part.encode())
    for example in examples:
        h.update(json.dumps([example.source, example.prompt, example.completion, example.messages,
                             example.text]).encode())
    return h.hexdigest()


def _features(segments: bool):
    from datasets import Features, List, Value

    ids = List(Value("int32"))
    columns = {"input_ids": ids, "labels": ids}
    return Features({**columns, "segment_lengths": ids} if segments else columns)


class _ArrowSink:
    """Receives the features chunk by chunk: appends them to the Arrow file and to the fingerprint
    (llm/identity.py's data_fingerprint: each row's size and its input ids as int64)."""

    def __init__(self, path: Path, segments: bool):
        from datasets.arrow_writer import ArrowWriter

        self.writer = ArrowWriter(features=_features(segments), path=str(path))
        self.segments = segments
        self.hash = hashlib.sha256()

    def __call__(self, features: list[dict]) -> None:
        columns = {key: [f[key] for f in features] for key in ("input_ids", "labels")}
        if self.segments:
            columns["segment_lengths"] = [f["segment_lengths"] for f in features]
        self.writer.write_batch(columns)
        for ids in columns["input_ids"]:
            self.hash.update(np.int64(len(ids)).tobytes())
            self.hash.update(np.asarray(ids, dtype=np.int64).tobytes())

    def close(self) -> str:
        self.writer.finalize()
        self.writer.close()
        return self.hash.hexdigest()[:16]


def write(folder: Path, examples, tokenizer, prompt_format, *, key: str, **options) -> TokenizedData:
    """Tokenizes `examples` into `folder` (replacing what was there); returns the counts."""
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    sink = _ArrowSink(partial / TOKENS_FILE, segments=data_format(prompt_format.kind).free_text and not options["seq2seq"])
    try:
        data = tokenize_examples(examples, tokenizer, prompt_format, sink=sink, **options)
    finally:
        data_fingerprint = sink.close()
    data.fingerprint = data_fingerprint
    stats = {k: v for k, v in asdict(data).items() if k != "features"}
    (partial / STATS_FILE).write_text(json.dumps({"key": key, **stats}) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    log.info("tokenized %d rows into %d sequences in %s", data.rows, data.sequences, folder)
    return data


def is_current(folder: Path, key: str) -> bool:
    """`folder` holds complete tokenized data made under `key`."""
    try:
        return json.loads((Path(folder) / STATS_FILE).read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def open_tokenized(folder: Path) -> TokenizedData:
    """The tokenized data in `folder`, its features a memory-mapped datasets.Dataset."""
    from datasets import Dataset

    stats = json.loads((Path(folder) / STATS_FILE).read_text())
    known = {f.name for f in fields(TokenizedData)} - {"features"}
    dataset = Dataset.from_file(str(Path(folder) / TOKENS_FILE), in_memory=False)
    return TokenizedData(dataset, **{k: v for k, v in stats.items() if k in known})


def build_or_reuse(folder: Path, examples, tokenizer, prompt_format, **options) -> None:
    """Makes `folder` hold the tokenized `examples`: reused where its key matches, else written."""
    key = cache_key(examples, tokenizer, prompt_format, options)
    if is_current(folder, key):
        log.info("reusing the tokenized data in %s (same rows, tokenizer and options)", folder)
        return
    write(folder, examples, tokenizer, prompt_format, key=key, **options)
