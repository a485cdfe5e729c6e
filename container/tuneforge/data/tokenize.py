"""Examples -> token ids and labels, with the trainable part marked by explicit segment masks.

Labels never come from pad_token_id: prompt tokens and padding get -100 by position, the
completion and its EOS stay trainable. Domain text is concatenated and cut into blocks that
record where their documents start (packing keeps documents apart by it).
Prompts are encoded by prompt.encode_prompt / encode_chat, the functions the server uses, so
training and serving see the same ids (one BOS, whatever the chat template renders).
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable

import torch

from ..errors import DataError
from .prompt import chat_segments, encode_chat, encode_prompt, token_ids
from .registry import data_format

IGNORE = -100
DOMAIN_PIECE_CHARS = 1 << 16  # domain documents are tokenized this many characters at a time
CHUNK_ROWS = 2048  # rows tokenized (and handed on) at a time: bounds what a sink's caller holds
log = logging.getLogger(__name__)


@dataclass
class TokenizedData:
    features: list[dict]  # or a memory-mapped datasets.Dataset with the same rows (data/arrow.py)
    rows: int
    sequences: int = 0
    truncated: int = 0
    tokens: int = 0
    trainable_tokens: int = 0
    truncated_sources: list[str] = field(default_factory=list)
    prompt_lost: list[str] = field(default_factory=list)  # rows whose whole prompt was cut away
    completion_lost: list[str] = field(default_factory=list)  # rows left with only EOS to learn
    long_rows: list[str] = field(default_factory=list)  # rows cut to a character budget before tokenizing
    tail_tokens_dropped: int = 0  # domain text: the short last block that was left out
    fingerprint: str | None = None  # llm/identity.py's data_fingerprint of the input ids, where it was computed

    def __post_init__(self):
        self.sequences = self.sequences or len(self.features)

    @property
    def trainable_share(self) -> float:
        return self.trainable_tokens / self.tokens if self.tokens else 0.0

    def report(self) -> dict:
        return {"rows": self.rows, "sequences": self.sequences, "rows_truncated": self.truncated,
                "tokens": self.tokens, "trainable_tokens": self.trainable_tokens,
                "trainable_share": round(self.trainable_share, 4),
                "truncated_examples": self.truncated_sources[:20],
                "rows_prompt_lost": len(self.prompt_lost), "rows_completion_lost": len(self.completion_lost),
                "prompt_lost_examples": self.prompt_lost[:20],
                "completion_lost_examples": self.completion_lost[:20],
                "long_rows_cut_before_tokenizing": self.long_rows[:20],
                "tail_tokens_dropped": self.tail_tokens_dropped}

    def count(self, features: list[dict], seq2seq: bool) -> None:
        """Adds `features` to the sequence and token counts."""
        self.sequences += len(features)
        for feature in features:
            self.tokens += len(feature["labels"]) if seq2seq else len(feature["input_ids"])
            self.trainable_tokens += sum(label != IGNORE for label in feature["labels"])

    def add_rows(self, rows: list[_Row]) -> None:
        """Adds the truncation facts of tokenized rows."""
        self.truncated += sum(r.truncated for r in rows)
        self.truncated_sources += [r.source for r in rows if r.truncated]
        self.prompt_lost += [r.source for r in rows if r.prompt_lost]
        self.completion_lost += [r.source for r in rows if r.completion_lost]
        self.long_rows += [r.source for r in rows if r.cut]


@dataclass(frozen=True)
class _Limits:
    max_len: int
    max_out: int
    seq2seq: bool
    longest: int  # characters of the longest token in the vocabulary


@dataclass
class _Row:
    feature: dict
    source: str
    truncated: bool = False
    prompt_lost: bool = False
    completion_lost: bool = False
    cut: bool = False


def longest_token_chars(tokenizer) -> int:
    return max((len(token) for token in tokenizer.get_vocab()), default=1) or 1


def _cut(tokenizer, text: str, tokens: int, longest: int, *, keep_end: bool = False) -> tuple[str, bool]:
    """`text` cut to a head (or tail) that still holds more than `tokens` + 2 tokens.

    No token holds more than `longest` characters, so the budget almost always suffices; the
    count guards normalizers that merge characters (it doubles the budget until it holds). Only
    tokens that truncation would remove anyway are lost, and memory stays bounded per row.
    """
    budget = (tokens + 2) * longest
    while len(text) > budget:
        piece = text[-budget:] if keep_end else text[:budget]
        if len(token_ids(tokenizer, piece)) > tokens + 2:
            return piece, True
        budget *= 2
    return text, False


def _learnable(labels: list[int], eos: int) -> bool:
    """EOS alone teaches only "stop now"."""
    return any(label not in (IGNORE, eos) for label in labels)


def _truncate_prompt_first(ids: list[int], labels: list[int], max_len: int, bos: int | None):
    """Drop prompt tokens from the left (after BOS) before cutting into the completion.
    Returns ids, labels and whether the whole prompt went."""
    first_trainable = next((i for i, lab in enumerate(labels) if lab != IGNORE), len(ids))
    head = 1 if ids and bos is not None and ids[0] == bos and labels[0] == IGNORE else 0
    context = max(first_trainable - head, 0)
    drop = min(len(ids) - max_len, context)
    ids = ids[:head] + ids[head + drop:]
    labels = labels[:head] + labels[head + drop:]
    return ids[:max_len], labels[:max_len], context > 0 and drop == context


def _chat_ids(example, tokenizer, prompt_format, lim: _Limits) -> tuple[list[int], list[int], bool]:
    first_answer = next(i for i, m in enumerate(example.messages) if m["role"] == "assistant")
    messages, cut = [], False
    for index, message in enumerate(example.messages):
        # context before the first answer keeps its end (truncation drops from the left), the rest its start
        content, was_cut = _cut(tokenizer, message["content"], lim.max_len, lim.longest,
                                keep_end=index < first_answer)
        messages.append({"role": message["role"], "content": content})
        cut = cut or was_cut
    try:
        segments = chat_segments(tokenizer, messages, prompt_format.chat_template)
    except ValueError:
        raise DataError("the chat template does not render conversations prefix by prefix, so "
                        "assistant turns cannot be masked", where=example.source,
                        fix="set the chat_template hyperparameter to a template that appends turns") from None
    ids, mask = encode_chat(tokenizer, segments)  # chat templates place their own end-of-turn tokens
    return ids, [i if m else IGNORE for i, m in zip(ids, mask)], cut


def _causal(example, tokenizer, prompt_format, lim: _Limits) -> _Row:
    if example.messages is not None:
        ids, labels, cut = _chat_ids(example, tokenizer, prompt_format, lim)
    else:
        prompt, cut_prompt = _cut(tokenizer, example.prompt, lim.max_len, lim.longest, keep_end=True)
        completion, cut_completion = _cut(tokenizer, example.completion, lim.max_len, lim.longest)
        head = encode_prompt(tokenizer, prompt, seq2seq=False)
        body = token_ids(tokenizer, completion) + [tokenizer.eos_token_id]
        ids, labels, cut = head + body, [IGNORE] * len(head) + body, cut_prompt or cut_completion
    _check_learnable(labels, tokenizer, example, lim)
    row = _Row({"input_ids": ids, "labels": labels}, example.source, cut=cut)
    if len(ids) > lim.max_len:
        ids, new_labels, row.prompt_lost = _truncate_prompt_first(ids, labels, lim.max_len, tokenizer.bos_token_id)
        row.feature = {"input_ids": ids, "labels": new_labels}
        row.truncated = True
        row.completion_lost = not _learnable(new_labels, tokenizer.eos_token_id)
    return row


def _seq2seq(example, tokenizer, lim: _Limits) -> _Row:
    eos = tokenizer.eos_token_id
    if example.messages is not None:
        raise DataError("chat data needs a decoder-only (causal) model", where=example.source,
                        fix="use instruction data for seq2seq models such as Flan-T5")
    source_text, cut_source = _cut(tokenizer, example.prompt or example.text, lim.max_len, lim.longest)
    target_text, cut_target = _cut(tokenizer, example.completion or example.text, lim.max_out, lim.longest)
    source = encode_prompt(tokenizer, source_text, seq2seq=True)
    target = token_ids(tokenizer, target_text) + [eos]
    _check_learnable(target, tokenizer, example, lim)
    row = _Row({"input_ids": source, "labels": target}, example.source, cut=cut_source or cut_target)
    if len(source) > lim.max_len or len(target) > lim.max_out:
        row.truncated = True
        row.feature = {"input_ids": source[: lim.max_len - 1] + [eos], "labels": target[: lim.max_out - 1] + [eos]}
        row.prompt_lost = len(source) > 1 and lim.max_len <= 1
        row.completion_lost = not _learnable(row.feature["labels"], eos)
    return row


def _check_learnable(labels, tokenizer, example, lim: _Limits) -> None:
    # An empty target is a data bug, not an example. (Truncation that leaves nothing is counted instead.)
    if not _learnable(labels, tokenizer.eos_token_id):
        raise DataError("the example has no trainable token (empty completion, or no assistant text)",
                        where=example.source, fix="give the row a non-empty response")


def _tokenize_chunk(examples, tokenizer, prompt_format, lim: _Limits) -> list[_Row]:
    if lim.seq2seq:
        return [_seq2seq(example, tokenizer, lim) for example in examples]
    return [_causal(example, tokenizer, prompt_format, lim) for example in examples]


_worker_state: tuple = ()  # (tokenizer, prompt_format, limits) in a pool worker, sent once per worker


def _init_worker(*state) -> None:
    global _worker_state
    _worker_state = state


def _tokenize_in_worker(examples) -> list[_Row]:
    return _tokenize_chunk(examples, *_worker_state)


def _row_chunks(examples, tokenizer, prompt_format, lim: _Limits, workers: int | None):
    """Tokenized rows, chunk by chunk in the order of `examples` (whatever the worker count)."""
    parallel = bool(workers and workers > 1 and len(examples) > 1)
    size = min(CHUNK_ROWS, -(-len(examples) // workers)) if parallel else CHUNK_ROWS
    chunks = (examples[i:i + size] for i in range(0, len(examples), size))
    if not parallel:
        for chunk in chunks:
            yield _tokenize_chunk(chunk, tokenizer, prompt_format, lim)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(tokenizer, prompt_format, lim)) as pool:
        yield from pool.map(_tokenize_in_worker, chunks)  # map keeps the order of the chunks


def _pieces(text: str, size: int):
    """Consecutive slices of at most `size` characters, cut before a space where there is one,
    so a word and its leading space stay together (tokenizers split there anyway)."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            space = text.rfind(" ", start + 1, end)
            end = space if space > start else end
        yield text[start:end]
        start = end


def _segment_lengths(doc_starts: list[int], start: int, end: int) -> list[int]:
    """Lengths of the document pieces in stream[start:end], given where each document starts."""
    cuts = [start] + doc_starts[bisect_right(doc_starts, start):bisect_left(doc_starts, end)] + [end]
    return [b - a for a, b in zip(cuts, cuts[1:])]


def _domain_blocks(examples, tokenizer, block: int, data: TokenizedData):
    """Documents concatenated (each ends with EOS) and cut into blocks of `block` tokens, yielded as
    the stream grows (only the unfinished block is held). Each block records the lengths of the
    document pieces it holds (`segment_lengths`): packing (llm/packing.py) makes them rows of
    their own, so no document attends to another. A short tail is counted in data.tail_tokens_dropped."""
    pending: list[int] = []  # the stream from the start of the unfinished block
    doc_starts: list[int] = []  # where documents start in `pending`
    full_blocks = 0
    for example in examples:
        doc_starts.append(len(pending))
        for piece in _pieces(example.text, DOMAIN_PIECE_CHARS):
            pending += token_ids(tokenizer, piece)
        pending.append(tokenizer.eos_token_id)
        at = 0  # trimmed once per document: a long document costs no copy per block
        while len(pending) - at >= block:
            if block > 1:
                yield {"input_ids": pending[at:at + block], "labels": pending[at:at + block],
                       "segment_lengths": _segment_lengths(doc_starts, at, at + block)}
            else:
                data.tail_tokens_dropped += block  # a one-token block has nothing to predict
            full_blocks += 1
            at += block
        if at:
            pending = pending[at:]
            doc_starts = [start - at for start in doc_starts if start > at]
    # a short tail adds noise, not signal (counted in the report)
    if (full_blocks and len(pending) < block // 4) or len(pending) <= 1:
        data.tail_tokens_dropped += len(pending)
    else:
        yield {"input_ids": pending, "labels": list(pending),
               "segment_lengths": _segment_lengths(doc_starts, 0, len(pending))}


def _domain(examples, tokenizer, lim: _Limits, data: TokenizedData, keep: Callable[[list[dict]], None]) -> None:
    if not lim.seq2seq:
        blocks = _domain_blocks(examples, tokenizer, lim.max_len, data)
        while features := list(islice(blocks, CHUNK_ROWS)):
            data.count(features, seq2seq=False)
            keep(features)
        return
    for at in range(0, len(examples), CHUNK_ROWS):
        data.count(features := _domain_seq2seq(examples[at:at + CHUNK_ROWS], tokenizer, lim, data), seq2seq=True)
        keep(features)


def _domain_seq2seq(examples, tokenizer, lim: _Limits, data: TokenizedData) -> list[dict]:
    """Each document is both source and target (cut to max_input_length and max_output_length)."""
    features = []
    eos = tokenizer.eos_token_id
    for example in examples:
        source, cut_source = _cut(tokenizer, example.text, lim.max_len, lim.longest)
        target, cut_target = _cut(tokenizer, example.text, lim.max_out, lim.longest)
        source_ids, target_ids = token_ids(tokenizer, source), token_ids(tokenizer, target)
        features.append({"input_ids": source_ids[: lim.max_len - 1] + [eos],
                         "labels": target_ids[: lim.max_out - 1] + [eos]})
        if len(source_ids) + 1 > lim.max_len or len(target_ids) + 1 > lim.max_out:
            data.truncated += 1
            data.truncated_sources.append(example.source)
        if cut_source or cut_target:
            data.long_rows.append(example.source)
    return features


def tokenize_examples(examples, tokenizer, prompt_format, *, max_len: int, max_out: int, seq2seq: bool,
                      workers: int | None = None, sink: Callable[[list[dict]], None] | None = None) -> TokenizedData:
    """The examples' token ids and labels, in the examples' order, with the counts report() gives.

    sink: called with each chunk of features in order (data/arrow.py writes them to disk); then
    data.features stays empty and no process holds all rows as Python lists."""
    lim = _Limits(max_len, max_out, seq2seq, longest_token_chars(tokenizer))
    data = TokenizedData([], rows=len(examples))
    keep = sink or data.features.extend
    if data_format(prompt_format.kind).free_text:
        _domain(examples, tokenizer, lim, data, keep)
    else:
        for rows in _row_chunks(examples, tokenizer, prompt_format, lim, workers):
            data.add_rows(rows)
            features = [r.feature for r in rows]
            data.count(features, seq2seq)
            keep(features)
        _check_truncation(data, lim)
    if data.long_rows:
        log.warning("%d row(s) hold far more text than max_input_length=%d tokens and were cut before "
                    "tokenizing (first: %s)", len(data.long_rows), max_len, ", ".join(data.long_rows[:3]))
    return data


def _check_truncation(data: TokenizedData, lim: _Limits) -> None:
    """A few rows losing their prompt (or answer) is a warning; most of them is a wrong setting."""
    for lost, part, limit, name in ((data.prompt_lost, "prompt", lim.max_len, "max_input_length"),
                                    (data.completion_lost, "completion", lim.max_out if lim.seq2seq else lim.max_len,
                                     "max_output_length" if lim.seq2seq else "max_input_length")):
        if not lost:
            continue
        what = (f"{len(lost)} of {data.rows} rows lose their whole {part} to truncation at {name}={limit} "
                f"(first: {', '.join(lost[:3])})")
        if 2 * len(lost) > data.rows:
            raise DataError(what + ", so the model would learn " +
                            ("answers without their questions" if part == "prompt" else "nothing but to stop"),
                            where=lost[0], fix=f"raise {name} (or shorten the rows' {part}s)")
        log.warning("%s; those rows train on %s", what,
                    "their completion alone" if part == "prompt" else "the end-of-sequence token alone")


class Collator:
    """Pads a batch: input ids with the pad id, labels with -100, attention mask 0 on padding.
    (A domain block's documents attend to each other here; llm/packing.py keeps them apart.)"""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        width = max(len(item["input_ids"]) for item in batch)
        label_width = max(len(item["labels"]) for item in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), label_width), IGNORE, dtype=torch.long)
        for row, item in enumerate(batch):
            n, m = len(item["input_ids"]), len(item["labels"])
            ids[row, :n] = torch.tensor(item["input_ids"])
            mask[row, :n] = 1
            labels[row, :m] = torch.tensor(item["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
