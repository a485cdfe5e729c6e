"""Length-grouped batching: batches of rows of similar length, in random order.

Padding a batch to its longest row wastes compute on every shorter row; on instruction data with
prompts of 20-400 tokens, random batches are about half padding. The sampler here shuffles the
rows, cuts them into mega-batches (up to 50 step-groups, at least two per epoch), sorts each mega-batch by length, cuts it
into step-groups and shuffles the step-groups. Every row comes exactly once per epoch; which rows
share a batch and the order of the batches stay random; only the padding goes.

A step-group is one per-device batch for every data-parallel rank (per_device x world size), so
the ranks of one step get rows of similar length too and none waits on a longer one. The order
is a function of (seed, epoch) alone, like accelerate's SeedableRandomSampler: every rank computes
the same one, and a resumed run sees the order the interrupted one would have seen.

It plugs into the Trainer's own data path (`_get_train_sampler`, llm/trainer.py), so accelerate shards it across
DDP, ZeRO and FSDP ranks as it shards the default random sampler. Losses are unchanged: the
Trainer normalizes by the number of label tokens in the step, whatever the batch composition.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler

MEGA_BATCH_GROUPS = 50  # step-groups sorted together: larger = less padding, less mixing
# Grouping makes the rows that share a batch alike in length, and on small, regular data sets
# (where length follows content) alike in content too, which can cost some quality (the tiny
# demo: validation loss 0.42 grouped vs 0.33 random, with 4 % padding to save). So rows are grouped
# only where random batches would waste at least this share of their positions on padding.
MIN_PADDING_TO_GROUP = 0.15


def arrow_table(features):
    """The Arrow table behind a datasets.Dataset in row order, or None for a list of dicts."""
    if hasattr(features, "column_names") and hasattr(features, "with_format"):
        return features.with_format("arrow")[:]  # zero-copy over the mapped file: no row becomes Python
    return None


def column_lengths(features, key: str) -> list[int]:
    """len(row[key]) of every row; of a datasets.Dataset read from the Arrow offsets, row by row never."""
    table = arrow_table(features)
    if table is not None:
        import pyarrow.compute as pc

        return pc.list_value_length(table.column(key)).to_pylist()
    return [len(f[key]) for f in features]


PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")  # TRL's tokenized preference pairs


def padded_sequences(features) -> list[list[tuple[int, ...]]]:
    """Per tensor a batch is padded into, the sequences each row puts in it: SFT rows pad their
    input ids and their labels (one each); a TRL preference pair puts prompt+chosen and
    prompt+rejected into one tensor (DPOTrainer's collator pads both halves to one length)."""
    if all(key in _columns(features) for key in PAIR_COLUMNS):
        prompt, chosen, rejected = (column_lengths(features, key) for key in PAIR_COLUMNS)
        return [[(p + c, p + r) for p, c, r in zip(prompt, chosen, rejected)]]
    return [[(n,) for n in column_lengths(features, key)] for key in ("input_ids", "labels")]


def _columns(features) -> list[str]:
    if hasattr(features, "column_names"):
        return list(features.column_names)
    return list(features[0]) if len(features) else []


def row_lengths(features) -> list[int]:
    """What padding a row costs: the longest sequence it puts in each padded tensor, summed (SFT:
    input ids plus labels, equal in causal models, so the order is the input length's; a pair:
    prompt plus its longer answer)."""
    return [sum(max(seqs) for seqs in row) for row in zip(*padded_sequences(features))]


class LengthGroupedSampler(Sampler[int]):
    def __init__(self, lengths: list[int], group_size: int, seed: int):
        self.lengths = list(lengths)
        self.group_size = max(1, group_size)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def groups(self, epoch: int | None = None) -> list[list[int]]:
        """The step-groups of an epoch, in the order they are trained."""
        generator = torch.Generator().manual_seed(self.seed + (self.epoch if epoch is None else epoch))
        n, size = len(self.lengths), self.group_size
        # at least 2 mega-batches, so which rows share a batch changes from epoch to epoch (the
        # order of the batches is random anyway: they are shuffled below)
        mega = max(1, min(MEGA_BATCH_GROUPS, -(-n // size) // 2)) * size
        order = torch.randperm(n, generator=generator).tolist()
        groups = []
        for start in range(0, n, mega):
            chunk = sorted(order[start:start + mega], key=self.lengths.__getitem__, reverse=True)
            groups += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        # a short last group stays last: moved inward it would shift every later batch boundary
        tail = [groups.pop()] if groups and len(groups[-1]) < size else []
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()] + tail
        if len(groups) > 1:  # the longest first: running out of memory shows at step 1, not hours in
            longest = max(range(len(groups)), key=lambda g: max(self.lengths[i] for i in groups[g]))
            groups[0], groups[longest] = groups[longest], groups[0]
        return groups

    def __iter__(self):
        groups = self.groups()
        self.epoch += 1  # the next pass differs even where nobody calls set_epoch
        return iter([i for group in groups for i in group])


def padding_share(features, order: list[int], batch_size: int) -> float:
    """Share of the padded positions that hold padding, for `order` cut into batches of
    `batch_size` rows (every padded tensor of the batch: padded_sequences)."""
    real = padded = 0
    for tensor in padded_sequences(features):
        for start in range(0, len(order), batch_size):
            sizes = [n for i in order[start:start + batch_size] for n in tensor[i]]
            real += sum(sizes)
            padded += max(sizes) * len(sizes)
    return 1 - real / padded if padded else 0.0


def describe(features, group_by_length: bool, per_device: int, world: int, seed: int) -> dict:
    """The batching to use, for metrics.json: group_by_length where it is asked for and worth it
    (MIN_PADDING_TO_GROUP), with the padding share of the first epoch's batches (per-device
    batches as the ranks see them) beside that of a random order."""
    size = per_device * max(1, world)
    random_order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed)).tolist()
    random_padding = round(padding_share(features, random_order, per_device), 4)
    report = {"strategy": "group_by_length" if group_by_length else "random",
              "padding_share_random_order": random_padding}
    if group_by_length and random_padding < MIN_PADDING_TO_GROUP:
        report.update(strategy="random", why=f"random batches waste only {random_padding:.1%} on padding "
                                               f"(grouping starts at {MIN_PADDING_TO_GROUP:.0%})")
    if report["strategy"] == "group_by_length":
        report["padding_share"] = round(padding_share(features, first_epoch_order(features, size, seed), per_device), 4)
    else:
        report["padding_share"] = report["padding_share_random_order"]
    return report


def first_epoch_order(features, group_size: int, seed: int) -> list[int]:
    """The rows in the order LengthGroupedSampler trains them in the first epoch."""
    return [i for group in LengthGroupedSampler(row_lengths(features), group_size, seed).groups(0) for i in group]


def length_grouped_sampler(dataset, args) -> LengthGroupedSampler:
    """The sampler of the training batches under length grouping (the Trainer's own group_by_length
    sorts each mega-batch longest first and draws from the global RNG; this one shuffles the
    batches and is seeded): step-groups of one per-device batch per rank, seeded by data_seed."""
    seed = args.data_seed if args.data_seed is not None else args.seed
    return LengthGroupedSampler(row_lengths(dataset), args.per_device_train_batch_size * max(1, args.world_size), seed)
