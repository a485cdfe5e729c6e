"""Examples -> token ids and labels, with the trainable part marked by explicit segment masks.

Labels never come from pad_token_id: prompt tokens and padding get -100 by position, the
completion and its EOS stay trainable. Domain text is concatenated and cut into blocks.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import torch

from ..errors import DataError
from ..prompt import render_chat

IGNORE = -100


@dataclass
class TokenizedData:
    features: list[dict]
    rows: int
    truncated: int = 0
    tokens: int = 0
    trainable_tokens: int = 0
    truncated_sources: list[str] = field(default_factory=list)

    @property
    def trainable_share(self) -> float:
        return self.trainable_tokens / self.tokens if self.tokens else 0.0

    def report(self) -> dict:
        return {"rows": self.rows, "sequences": len(self.features), "rows_truncated": self.truncated,
                "tokens": self.tokens, "trainable_tokens": self.trainable_tokens,
                "trainable_share": round(self.trainable_share, 4),
                "truncated_examples": self.truncated_sources[:20]}


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _segments(example, tokenizer, prompt_format) -> list[tuple[str, bool]]:
    """(text, trainable) pieces of one example."""
    if example.messages is None:
        return [(example.prompt, False), (example.completion, True)]
    template = prompt_format.chat_template
    segments, done = [], ""
    for index, message in enumerate(example.messages):
        if message["role"] == "assistant":
            header = render_chat(tokenizer, example.messages[:index], add_generation_prompt=True,
                                 chat_template=template) if index else ""
            segments.append((header[len(done):], False))
            done = header
        upto = render_chat(tokenizer, example.messages[: index + 1], add_generation_prompt=False,
                           chat_template=template)
        if not upto.startswith(done):
            raise DataError("the chat template does not render conversations prefix by prefix, so "
                            "assistant turns cannot be masked", where=example.source,
                            fix="set the chat_template hyperparameter to a template that appends turns")
        segments.append((upto[len(done):], message["role"] == "assistant"))
        done = upto
    return segments


def _causal(example, tokenizer, prompt_format, max_len: int) -> tuple[dict, bool]:
    ids, labels = [], []
    if tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE)
    for text, trainable in _segments(example, tokenizer, prompt_format):
        piece = _ids(tokenizer, text)
        ids += piece
        labels += piece if trainable else [IGNORE] * len(piece)
    if example.messages is None:  # chat templates place their own end-of-turn tokens
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    truncated = len(ids) > max_len
    if truncated:
        ids, labels = _truncate_prompt_first(ids, labels, max_len)
    return {"input_ids": ids, "labels": labels}, truncated


def _truncate_prompt_first(ids: list[int], labels: list[int], max_len: int):
    """Drop prompt tokens from the left (after BOS) before cutting into the completion."""
    first_trainable = next((i for i, lab in enumerate(labels) if lab != IGNORE), len(ids))
    excess = len(ids) - max_len
    keep_head = 1 if ids and labels[0] == IGNORE else 0
    droppable = max(first_trainable - keep_head, 0)
    drop = min(excess, droppable)
    ids = ids[:keep_head] + ids[keep_head + drop:]
    labels = labels[:keep_head] + labels[keep_head + drop:]
    return ids[:max_len], labels[:max_len]


def _seq2seq(example, tokenizer, max_len: int, max_out: int) -> tuple[dict, bool]:
    eos = tokenizer.eos_token_id
    if example.messages is not None:
        raise DataError("chat data needs a decoder-only (causal) model", where=example.source,
                        fix="use instruction data for seq2seq models such as Flan-T5")
    source = _ids(tokenizer, example.prompt or example.text)
    target = _ids(tokenizer, example.completion or example.text)
    truncated = len(source) + 1 > max_len or len(target) + 1 > max_out
    return {"input_ids": source[: max_len - 1] + [eos], "labels": target[: max_out - 1] + [eos]}, truncated


def _domain_blocks(examples, tokenizer, block: int) -> list[dict]:
    stream: list[int] = []
    for example in examples:
        stream += _ids(tokenizer, example.text) + [tokenizer.eos_token_id]
    blocks = [stream[i:i + block] for i in range(0, len(stream), block)]
    if len(blocks) > 1 and len(blocks[-1]) < block // 4:
        blocks.pop()  # a short tail adds noise, not signal
    return [{"input_ids": b, "labels": list(b)} for b in blocks if len(b) > 1]


def _tokenize_chunk(args):
    examples, tokenizer, prompt_format, max_len, max_out, seq2seq = args
    out = []
    for example in examples:
        if seq2seq:
            feature, truncated = _seq2seq(example, tokenizer, max_len, max_out)
        else:
            feature, truncated = _causal(example, tokenizer, prompt_format, max_len)
        # EOS alone teaches only "stop now": an empty target is a data bug, not an example.
        if not any(label not in (IGNORE, tokenizer.eos_token_id) for label in feature["labels"]):
            raise DataError("the example has no trainable token (empty completion, or the prompt fills "
                            f"max_input_length={max_len})", where=example.source,
                            fix="give the row a non-empty response or raise max_input_length")
        out.append((feature, truncated, example.source))
    return out


def tokenize_examples(examples, tokenizer, prompt_format, *, max_len: int, max_out: int,
                      seq2seq: bool, workers: int | None = None) -> TokenizedData:
    if prompt_format.kind == "domain":
        if seq2seq:
            features = [{"input_ids": _ids(tokenizer, e.text)[: max_len - 1] + [tokenizer.eos_token_id],
                         "labels": _ids(tokenizer, e.text)[: max_out - 1] + [tokenizer.eos_token_id]}
                        for e in examples]
        else:
            features = _domain_blocks(examples, tokenizer, max_len)
        data = TokenizedData(features, rows=len(examples))
    else:
        chunks = [examples[i::workers] for i in range(workers)] if workers and workers > 1 else [examples]
        jobs = [(chunk, tokenizer, prompt_format, max_len, max_out, seq2seq) for chunk in chunks]
        if len(jobs) > 1:
            with ProcessPoolExecutor(len(jobs)) as pool:
                results = [item for part in pool.map(_tokenize_chunk, jobs) for item in part]
        else:
            results = _tokenize_chunk(jobs[0])
        data = TokenizedData([f for f, _, _ in results], rows=len(examples),
                             truncated=sum(t for _, t, _ in results),
                             truncated_sources=[s for _, t, s in results if t])
    for feature in data.features:
        data.tokens += len(feature["labels"]) if seq2seq else len(feature["input_ids"])
        data.trainable_tokens += sum(label != IGNORE for label in feature["labels"])
    return data


class Collator:
    """Pads a batch: input ids with the pad id, labels with -100, attention mask 0 on padding."""

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
