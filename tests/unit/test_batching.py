"""Length-grouped batching (llm/batching.py): every row once per epoch, batches of similar
length in random order, the same order on every rank and after a resume, and the same loss."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from tuneforge.data import Collator
from tuneforge.llm.batching import LengthGroupedSampler, describe, padding_share, row_lengths


def _features(n: int, seed: int = 0, lo: int = 25, hi: int = 600) -> list[dict]:
    """Rows of varied length whose first id names the row (i + 10)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        length = rng.randint(lo, hi)
        prompt = rng.randint(1, length - 1)
        ids = [i + 10] + [5] * (length - 1)
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def _order(sampler, epoch=None) -> list[int]:
    if epoch is not None:
        sampler.set_epoch(epoch)
    return list(iter(sampler))


@pytest.mark.parametrize("n, group", [(480, 8), (101, 8), (7, 8), (333, 16), (64, 1)])
def test_every_row_exactly_once_per_epoch(n, group):
    sampler = LengthGroupedSampler(row_lengths(_features(n)), group, seed=3)
    for epoch in range(3):
        order = _order(sampler, epoch)
        assert len(order) == len(sampler) == n
        assert sorted(order) == list(range(n))


def test_batches_are_length_homogeneous_and_far_less_padded_than_random():
    features = _features(480)
    sampler = LengthGroupedSampler(row_lengths(features), 8, seed=10)
    grouped = padding_share(features, _order(sampler, 0), 8)
    shuffled = padding_share(features, torch.randperm(480, generator=torch.Generator().manual_seed(0)).tolist(), 8)
    assert shuffled > 0.35  # uniform 25-600 tokens: random batches are mostly padding
    assert grouped < 0.08
    assert grouped < shuffled / 5


def test_batch_order_is_random_and_changes_every_epoch_but_is_fixed_by_seed_and_epoch():
    features = _features(480)
    lengths = row_lengths(features)
    a = LengthGroupedSampler(lengths, 8, seed=10)
    epoch0, epoch1 = _order(a, 0), _order(a, 1)
    assert epoch0 != epoch1
    batches0 = {tuple(sorted(epoch0[i:i + 8])) for i in range(0, 480, 8)}
    batches1 = {tuple(sorted(epoch1[i:i + 8])) for i in range(0, 480, 8)}
    assert len(batches0 & batches1) < 30  # the rows that share a batch change too, not only the order
    # batches are not in length order: the longest row of each batch goes up and down many times
    tops = [max(lengths[i] for i in epoch0[s:s + 8]) for s in range(0, 480, 8)]
    turns = sum((b - a) * (c - b) < 0 for a, b, c in zip(tops, tops[1:], tops[2:]))
    assert turns > 20
    assert tops[0] == max(lengths)  # the longest batch first: an out-of-memory shows at step 1
    # another process with the same seed (another rank, a resumed run) computes the same order
    b = LengthGroupedSampler(lengths, 8, seed=10)
    assert _order(b, 1) == epoch1 and _order(b, 0) == epoch0
    assert _order(LengthGroupedSampler(lengths, 8, seed=11), 0) != epoch0
    # iterating without set_epoch moves on to the next epoch's order
    c = LengthGroupedSampler(lengths, 8, seed=10)
    assert [list(iter(c)) for _ in range(2)] == [epoch0, epoch1]


def test_two_ranks_sharded_by_accelerate_cover_every_row_once_with_similar_lengths():
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    features = _features(480)
    lengths = row_lengths(features)
    # each rank builds its own sampler, as the Trainer does for 2 ranks of 8 rows
    ranks = [list(BatchSamplerShard(BatchSampler(LengthGroupedSampler(lengths, 8 * 2, seed=10), 8, False),
                                    num_processes=2, process_index=rank)) for rank in range(2)]
    seen = Counter(i for rank in ranks for batch in rank for i in batch)
    assert sorted(seen) == list(range(480)) and set(seen.values()) == {1}
    for rank in ranks:
        assert padding_share(features, [i for batch in rank for i in batch], 8) < 0.08
    # a step lasts as long as its longest batch on any rank: counting that wait, still far less padding
    random_ranks = [list(BatchSamplerShard(BatchSampler(torch.randperm(480, generator=torch.Generator().manual_seed(0))
                                                        .tolist(), 8, False), num_processes=2, process_index=rank))
                    for rank in range(2)]
    grouped, shuffled = ([i for a, b in zip(*r) for i in a + b] for r in (ranks, random_ranks))
    assert padding_share(features, grouped, 16) < padding_share(features, shuffled, 16) / 3


def test_the_loss_of_the_same_rows_does_not_depend_on_order_or_padding(tiny):
    """Two micro-batches of 4 rows, grouped by length or not: the step's loss (summed token losses
    over the step's label count, as the Trainer normalizes it) and the gradients are the same."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny("llama"), dtype=torch.float32)
    model.eval()  # no dropout: the comparison is exact math
    rng = random.Random(1)
    rows = []
    for length in (6, 55, 8, 60, 7, 52, 9, 58):
        ids = [rng.randint(4, model.config.vocab_size - 1) for _ in range(length)]
        prompt = rng.randint(1, length - 2)
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    collate = Collator(0)
    label_count = sum(sum(label != -100 for label in r["labels"][1:]) for r in rows)  # shifted, as the model counts

    def step(order):
        model.zero_grad()
        total = 0.0
        for start in (0, 4):
            batch = collate([rows[i] for i in order[start:start + 4]])
            loss = model(**batch, num_items_in_batch=torch.tensor(label_count)).loss
            loss.backward()
            total += loss.item()
        return total, [p.grad.clone() for p in model.parameters()]

    lengths = [len(r["input_ids"]) for r in rows]
    grouped = sorted(range(8), key=lengths.__getitem__)
    mixed = [grouped[i] for i in (0, 7, 1, 6, 2, 5, 3, 4)]
    loss_grouped, grads_grouped = step(grouped)
    loss_mixed, grads_mixed = step(mixed)
    padding = [padding_share(rows, order, 4) for order in (grouped, mixed)]
    assert padding[0] < 0.1 < 0.4 < padding[1]  # really different padding...
    assert loss_grouped == pytest.approx(loss_mixed, rel=1e-6, abs=1e-6)  # ...same loss
    for a, b in zip(grads_grouped, grads_mixed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # and it is the per-token mean of each row on its own, without any padding
    with torch.no_grad():
        alone = sum(model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]]),
                          num_items_in_batch=torch.tensor(label_count)).loss.item() for r in rows)
    assert loss_grouped == pytest.approx(alone, rel=1e-5)


@pytest.mark.parametrize("strategy", ["group_by_length", "random"])
def test_the_trainers_own_dataloader_uses_it(tiny, tmp_path, strategy):
    """Through Trainer.get_train_dataloader (accelerate's prepare included): every row once, and
    the padding in the collated batches is that of the strategy."""
    from transformers import AutoModelForCausalLM, TrainingArguments

    from tuneforge.llm.trainer import TrainerPlan, TuneforgeTrainer

    features = _features(200, lo=10, hi=300)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, use_cpu=True, report_to=[],
                             remove_unused_columns=False, seed=10, data_seed=10)
    trainer = TuneforgeTrainer(model=AutoModelForCausalLM.from_pretrained(tiny("llama")), args=args,
                               train_dataset=features, data_collator=Collator(0),
                               plan=TrainerPlan(length_grouping=strategy == "group_by_length"))
    seen, real, padded = Counter(), 0, 0
    for batch in trainer.get_train_dataloader():
        seen.update(batch["input_ids"][:, 0].tolist())
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
    assert sorted(seen) == [i + 10 for i in range(200)] and set(seen.values()) == {1}
    share = 1 - real / padded
    expected = describe(features, strategy == "group_by_length", 8, 1, 10)
    if strategy == "group_by_length":  # exactly the first epoch of LengthGroupedSampler(seed=data_seed)
        assert share == pytest.approx(expected["padding_share"], abs=1e-4)
        assert share < expected["padding_share_random_order"] / 3
    else:
        assert share > 0.3


def test_describe_records_the_strategy_and_both_padding_shares():
    features = _features(480)
    on = describe(features, True, 8, 1, 10)
    off = describe(features, False, 8, 1, 10)
    assert on["strategy"] == "group_by_length" and off["strategy"] == "random"
    assert on["padding_share"] < 0.08 < 0.35 < on["padding_share_random_order"] == off["padding_share"]


def test_rows_of_nearly_equal_length_are_not_grouped():
    """Little padding to save: random batches (grouping would only make batches alike)."""
    report = describe(_features(480, lo=90, hi=100), True, 8, 1, 10)
    assert report["strategy"] == "random" and report["padding_share"] == report["padding_share_random_order"] < 0.15
    assert "grouping starts at 15%" in report["why"]


def test_group_by_length_and_eval_batch_size_hyperparameters():
    from tuneforge.config import parse_hyperparameters
    from tuneforge.errors import HyperparameterError

    default = parse_hyperparameters({"per_device_train_batch_size": "8"})
    assert default.group_by_length is True
    assert default.per_device_eval_batch_size == -1 and default.eval_batch_size == 8
    explicit = parse_hyperparameters({"per_device_train_batch_size": "8", "per_device_eval_batch_size": "\"32\"",
                                      "group_by_length": "False"})
    assert explicit.group_by_length is False and explicit.eval_batch_size == 32
    with pytest.raises(HyperparameterError) as error:
        parse_hyperparameters({"per_device_eval_batch_size": "0"})
    assert "per_device_eval_batch_size" in str(error.value) and "-1" in str(error.value)
