"""A preference method under DeepSpeed: LoRA DPO with ZeRO-2 and ZeRO-3 on 2 CPU processes (gloo).
TRL's DPOTrainer runs inside the DeepSpeed engine (the reference: the base with the adapter off),
tuneforge's checkpoints, metric lines and model/ around it."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.e2e.test_preference import DPO, PAIRS, _add_pairs
from tuneforge.llm.preference_metrics import completion_logp

from .conftest import resource_config, run_job

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_lora_dpo_under_deepspeed_learns_the_pairs_and_saves_whole_weights(job, tiny, stage):
    job.add_model(tiny("llama"))
    _add_pairs(job, PAIRS)
    resource_config(job)
    job.hyperparameters({**DPO, "deepspeed": stage, "max_steps": "8", "per_device_train_batch_size": "4"})
    code, log = run_job(job, timeout=600)
    assert code == 0, log[-4000:]
    metrics = job.metrics()
    assert metrics["parallelism"] == f"deepspeed {stage}" and metrics["steps"] == 8, metrics["parallelism"]
    assert metrics["final_reward_accuracy"] == 1.0 and metrics["final_reward_margin"] > 0, metrics
    assert "[metric] final_reward_accuracy=1.000000" in log
    # scored before and after: rank 0 alone on whole weights (ZeRO-2), every rank in lockstep on ZeRO-3's shards
    accuracy = metrics["preference_accuracy"]
    assert accuracy["before"] == {"accuracy": 0.0, "pairs": 16} and accuracy["after"] == {"accuracy": 1.0, "pairs": 16}
    samples = [json.loads(line) for line in (job.base / "output" / "data" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all(s["before"] is not None and s["after"] is not None for s in samples), samples
    # model/ holds whole merged weights that prefer every chosen answer, through the saved prompt
    model = AutoModelForCausalLM.from_pretrained(job.model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    saved = json.loads((job.model_dir / "tuneforge.json").read_text())["prompt"]
    assert saved["kind"] == "instruction"
    for pair in PAIRS:
        prompt = f"{pair['prompt']}\n\n### Response:\n"
        with torch.no_grad():
            assert completion_logp(model, tokenizer, prompt, pair["chosen"], 64) > \
                completion_logp(model, tokenizer, prompt, pair["rejected"], 64), pair
