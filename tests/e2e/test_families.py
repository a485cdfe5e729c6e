"""Every supported family: LoRA fine-tune a few steps, merge, reload with the Auto classes, generate."""

import json

import pytest
import torch
from safetensors import safe_open

from tuneforge.tiny import FAMILIES

FEW_STEPS = {"max_steps": "6", "learning_rate": "0.01", "per_device_train_batch_size": "8",
             "per_device_eval_batch_size": "8", "rouge_samples": "2", "max_output_length": "8",
             "logging_steps": "1", "max_val_samples": "16"}  # LoRA on each family's default targets


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_merge_reload_generate(job, tiny, family):
    job.add_model(tiny(family))
    job.add_sample_data("instruction", n_train=64, n_val=16)
    job.hyperparameters({"instruction_tuned": "True", **FEW_STEPS})
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""

    metrics = job.metrics()
    assert metrics["steps"] == 6
    assert metrics["eval_loss"] < metrics["eval_loss_before"]  # the adapter moved the model
    meta = json.loads((job.model_dir / "tuneforge.json").read_text())
    assert meta["model_type"] == json.loads((tiny(family) / "config.json").read_text())["model_type"]
    with safe_open(job.model_dir / "model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert keys and not any("lora_" in k for k in keys)  # merged: plain weights only

    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    seq2seq = meta["architecture"] == "seq2seq"
    assert seq2seq == (family == "t5")
    model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(job.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    ids = tokenizer("What color is the lime?", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    new = out[0] if seq2seq else out[0, ids["input_ids"].shape[1]:]
    assert new.shape[0] >= 5 and torch.all(new < len(tokenizer))
