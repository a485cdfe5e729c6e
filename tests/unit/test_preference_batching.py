"""DPO batches pairs of similar length (llm/batching.py through TRL's DPOTrainer): setup plans on
the pairs tokenized as TRL tokenizes them, and TRL's own dataloader then pads far less than random
batches, every pair once."""

import random
from collections import Counter

import pytest

from tuneforge.llm.batching import describe, padding_share, row_lengths
from tuneforge.llm.preference_data import pair_token_ids


def _pairs(n: int) -> list[dict]:
    rng, words = random.Random(3), "the a ticket refund parcel screen login invoice late broken".split()
    text = lambda k: " ".join(rng.choice(words) for _ in range(k))  # noqa: E731
    return [{"prompt": f"Q{i}: {text(int(5 + 120 * rng.random() ** 2))}\n### Response:\n",
             "chosen": text(int(1 + 60 * rng.random() ** 2)), "rejected": text(int(1 + 60 * rng.random() ** 2))}
            for i in range(n)]


def test_a_pair_costs_its_prompt_and_its_longer_answer_in_one_padded_tensor():
    rows = [{"prompt_ids": [1] * 10, "chosen_ids": [2] * 3, "rejected_ids": [3] * 7},
            {"prompt_ids": [1] * 2, "chosen_ids": [2] * 1, "rejected_ids": [3] * 1}]
    assert row_lengths(rows) == [17, 3]
    # one batch of both: 4 sequences padded to 17; real 13 + 17 + 3 + 3
    assert padding_share(rows, [0, 1], 2) == pytest.approx(1 - 36 / 68)


def test_trls_dataloader_batches_the_pairs_setup_planned(tiny, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from tuneforge.llm.trainer import TrainerPlan, tuneforge_trainer_class

    features = Dataset.from_list(_pairs(96))
    tokenizer = AutoTokenizer.from_pretrained(tiny("llama"))
    planned = pair_token_ids(features, tokenizer)
    report = describe(planned, True, 8, 1, 10)
    assert report["strategy"] == "group_by_length" and report["padding_share_random_order"] > 0.3
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, use_cpu=True, report_to=[],
                     seed=10, data_seed=10, max_length=1024, padding_free=False, dataset_num_proc=None)
    trainer = tuneforge_trainer_class(DPOTrainer)(
        model=AutoModelForCausalLM.from_pretrained(tiny("llama")), args=args, train_dataset=features,
        processing_class=tokenizer, plan=TrainerPlan(length_grouping=True))
    tokenized = trainer.train_dataset
    assert [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in tokenized] == planned

    seen, real, padded = Counter(), 0, 0
    for batch in trainer.get_train_dataloader():
        half = batch["input_ids"].shape[0] // 2  # chosen rows, then rejected rows
        seen.update(tuple(row[:8].tolist()) for row in batch["input_ids"][:half])
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
    assert sum(seen.values()) == 96 and len(seen) == 96  # every pair once (their prompts differ from the start)
    assert 1 - real / padded == pytest.approx(report["padding_share"], abs=1e-4)
    # what is left is mostly the shorter answer of each pair, padded to the longer one
    assert report["padding_share"] < report["padding_share_random_order"] / 1.5
