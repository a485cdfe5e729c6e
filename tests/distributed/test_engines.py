"""Combinations that break in the field: a seq2seq model under ZeRO-3, and LoRA with gradient
checkpointing under DDP (reentrant checkpointing marks parameters ready twice)."""

import pytest

from .conftest import reload_and_generate, resource_config, run_job

pytestmark = pytest.mark.slow

QUICK = {"max_steps": "4", "checkpoint_steps": "2", "per_device_train_batch_size": "4", "rouge_samples": "2",
         "max_output_length": "4"}


def _train(job, tiny, family: str, kind: str, settings: dict) -> dict:
    job.add_model(tiny(family))
    job.add_sample_data(kind, n_train=32, n_val=8)
    resource_config(job)
    job.hyperparameters({**QUICK, "instruction_tuned": str(kind == "instruction"), "chat_dataset": str(kind == "chat"),
                         **settings})
    code, log = run_job(job)
    assert code == 0, log[-3000:]
    return job.metrics()


def test_flan_t5_style_seq2seq_under_zero3_with_lora(job, tiny):
    metrics = _train(job, tiny, "t5", "instruction", {"deepspeed": "zero3"})
    assert metrics["distributed_type"] == "DEEPSPEED" and metrics["steps"] == 4 and "rougeL" in metrics
    from transformers import AutoModelForSeq2SeqLM

    assert AutoModelForSeq2SeqLM.from_pretrained(job.model_dir).config.model_type == "t5"


def test_chat_lora_with_gradient_checkpointing_under_ddp(job, tiny):
    metrics = _train(job, tiny, "llama", "chat", {"gradient_checkpointing": "True"})
    assert metrics["distributed_type"] == "MULTI_CPU" and metrics["data"]["format"] == "chat"
    assert metrics["steps"] == 4 and metrics["train_loss"] > 0
    reload_and_generate(job.model_dir)
