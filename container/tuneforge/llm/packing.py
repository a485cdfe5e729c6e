"""Padding-free packing: the rows of a batch packed best-fit into bins, attention kept inside each row.

A packed batch has no attention mask. Instead `position_ids` restart at 0 at the start of every
row, and transformers turns that into attention that never crosses a row boundary: FlashAttention
varlen kernels take the rows' cumulative lengths (`_flash_attention_forward` with position_ids
and one flattened row), SDPA and eager attention get a block-diagonal mask
(`masking_utils.find_packed_sequence_indices`, only when no attention mask and no KV cache is
passed: hence `use_cache=False` in the batch). The first label of every row is masked (-100):
it would otherwise be predicted from the previous row's last token. An unpacked batch never
predicts it either (the causal shift drops it), so losses and gradients are those of the padded
batch (tests/unit/test_packing.py).

The sampler still decides which rows share a step (length-grouped or random), so the number of
steps, the learning-rate schedule and the loss normalization (label tokens per step) are those of
an unpacked run. Packing only changes how those rows are laid out:
- FlashAttention varlen: all rows of the batch in one flattened row (no bins are needed: the
  kernel's work is the sum of each row's own attention);
- SDPA / eager: bins of up to max_input_length tokens (best fit, longest first), so the
  block-diagonal attention of a bin costs no more than one padded row of that length.

Domain-adaptation blocks carry `segment_lengths` (tokenize.py): the documents a block holds
become rows of their own, so no document attends to another.

Where it pays: on GPUs with FlashAttention varlen kernels. SDPA computes the whole block mask,
so on CPU it is slower than length-grouped batches (docs/benchmarks.md); `packing=auto` turns it
on only with a varlen kernel.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field

import torch

from ..data.tokenize import IGNORE
from ..errors import HyperparameterError
from ..families import PACKING_FAMILIES  # the families whose attention keeps packed rows apart
from .batching import arrow_table, column_lengths, first_epoch_order

VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def best_fit_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` packed into bins of at most `capacity` (best fit, longest first): each
    row goes to the fullest bin it still fits in. A row longer than `capacity` gets a bin alone."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted
    for i in order:
        at = bisect_left(free, (lengths[i], -1))
        if at < len(free):
            space, b = free.pop(at)
        else:
            space, b = max(capacity, lengths[i]), len(bins)
            bins.append([])
        bins[b].append(i)
        if space - lengths[i] > 0:
            insort(free, (space - lengths[i], b))
    return bins


def split_rows(batch: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of every row of the batch; a domain block with `segment_lengths` gives
    one row per document piece. The first label of each row is masked."""
    rows = []
    for item in batch:
        ids, labels = item["input_ids"], item["labels"]
        start = 0
        for length in item.get("segment_lengths") or [len(ids)]:
            piece = list(labels[start:start + length])
            if piece:
                piece[0] = IGNORE
                rows.append((list(ids[start:start + length]), piece))
            start += length
    return rows


def piece_lengths(features) -> list[list[int]]:
    """The lengths of the rows split_rows makes of each feature (its documents' pieces, else itself),
    read from the columns of a datasets.Dataset without materializing its rows."""
    table = arrow_table(features)
    if table is not None and "segment_lengths" in table.column_names:
        segments = table.column("segment_lengths").to_pylist()
    elif table is not None:
        segments = [None] * table.num_rows
    else:
        segments = [f.get("segment_lengths") for f in features]
    inputs = column_lengths(features, "input_ids")
    return [[n for n in _clipped(segment or [length], length) if n > 0] for segment, length in zip(segments, inputs)]


def _clipped(pieces: list[int], total: int) -> list[int]:
    """Piece lengths cut where the row ends (as split_rows slices them)."""
    out, start = [], 0
    for length in pieces:
        out.append(max(0, min(length, total - start)))
        start += length
    return out


def packed_padding_share(features, capacity: int | None, strategy: str, per_device: int, world: int,
                         seed: int) -> float:
    """Share of the positions of the first epoch's packed per-device batches that hold padding (the
    ends of bins), for metrics.json: the batches the sampler of `strategy` makes (batching.py)."""
    if strategy == "group_by_length":
        order = first_epoch_order(features, per_device * max(1, world), seed)
    else:
        order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed)).tolist()
    pieces = piece_lengths(features)
    real = total = 0
    for at in range(0, len(order), per_device):
        lengths = [n for i in order[at:at + per_device] for n in pieces[i]]
        bins = [lengths] if capacity is None else [[lengths[i] for i in b] for b in best_fit_bins(lengths, capacity)]
        real += sum(lengths)
        total += len(bins) * max(sum(b) for b in bins)
    return round(1 - real / total, 4) if total else 0.0


class PackedCollator:
    """A batch of rows -> bins without attention mask: input ids, labels, position_ids restarting
    per row, use_cache=False. capacity=None puts every row in one flattened row (varlen kernels)."""

    def __init__(self, pad_id: int, capacity: int | None):
        self.pad_id = pad_id
        self.capacity = capacity

    def __call__(self, batch: list[dict]) -> dict:
        rows = split_rows(batch)
        lengths = [len(ids) for ids, _ in rows]
        bins = [list(range(len(rows)))] if self.capacity is None else best_fit_bins(lengths, self.capacity)
        width = max(sum(lengths[i] for i in members) for members in bins)
        ids = torch.full((len(bins), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(bins), width), IGNORE, dtype=torch.long)
        positions = torch.zeros((len(bins), width), dtype=torch.long)
        for b, members in enumerate(bins):
            at = 0
            for i in members:
                row_ids, row_labels = rows[i]
                ids[b, at:at + len(row_ids)] = torch.tensor(row_ids)
                labels[b, at:at + len(row_ids)] = torch.tensor(row_labels)
                positions[b, at:at + len(row_ids)] = torch.arange(len(row_ids))
                at += len(row_ids)
            # the padding at a bin's end is a row of its own (positions from 0): nothing attends to it
            positions[b, at:] = torch.arange(width - at)
        return {"input_ids": ids, "labels": labels, "position_ids": positions, "use_cache": False}


@dataclass
class PackingPlan:
    enabled: bool
    report: dict = field(default_factory=dict)
    collator: PackedCollator | None = None


def plan_packing(setting: str, model, *, seq2seq: bool, pad_id: int, max_len: int) -> PackingPlan:
    """Whether to pack, from the `packing` hyperparameter (auto/true/false) and what the model's
    attention can do; the report goes to metrics.json."""
    attention = getattr(model.config, "_attn_implementation", None) or "eager"
    model_type = getattr(model.config, "model_type", "?")
    varlen = attention in VARLEN_ATTENTION
    report = {"setting": setting, "attention": attention}
    why_not = None
    if seq2seq:
        why_not = "encoder-decoder models are not packed"
    elif model_type not in PACKING_FAMILIES:
        why_not = (f"the {model_type} architecture does not keep packed rows apart (it ignores position_ids); "
                   f"packing supports {', '.join(sorted(PACKING_FAMILIES))}")
    elif setting == "auto" and not varlen:
        why_not = (f"{attention} attention computes the whole block-diagonal mask of a packed row, which is slower "
                   "than length-grouped batches; packing=auto packs only with FlashAttention varlen kernels")
    if setting == "false":
        why_not = "packing=false"
    if why_not is not None:
        if setting == "true":
            raise HyperparameterError(f"packing=true is not possible here: {why_not}", where="hyperparameter packing",
                                      fix="set packing=auto or packing=false")
        return PackingPlan(False, {**report, "enabled": False, "why": why_not})
    capacity = None if varlen else max_len
    report.update(enabled=True, layout="one flattened row per batch (varlen)" if varlen
                  else f"best-fit bins of up to {max_len} tokens")
    return PackingPlan(True, report, PackedCollator(pad_id, capacity))

