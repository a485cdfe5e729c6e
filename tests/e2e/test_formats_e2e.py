"""Each data format end to end, with hyperparameters in each SageMaker encoding."""

import json

import pandas as pd
import pytest

QUICK = {"max_steps": "4", "per_device_train_batch_size": "8", "per_device_eval_batch_size": "8",
         "rouge_samples": "2", "max_output_length": "8", "max_val_samples": "8", "logging_steps": "1"}

CASES = {
    # name: (data kind, family, hyperparameters in one encoding style)
    "instruction-json-quoted": ("instruction", "llama", {"instruction_tuned": '"True"', "learning_rate": '"0.003"',
                                                         "peft_type": '"none"'}),
    "chat-lowercase": ("chat", "mistral", {"chat_dataset": "true", "learning_rate": "0.003"}),
    "domain-generic-estimator": ("domain", "gpt2", {"instruction_tuned": "False", "chat_dataset": "False",
                                                    "learning_rate": "0.003", "max_input_length": "64"}),
    "table-autopilot-names": ("table", "falcon", {"epochCount": "1", "batchSize": "8", "learningRate": "0.003",
                                                  "learningRateWarmupSteps": "2"}),
    "instruction-flan-t5-json-types": ("instruction", "t5", {"instruction_tuned": True, "epochs": 1,
                                                             "batch_size": 8, "learning_rate": 0.003}),
}


@pytest.mark.parametrize("case", CASES)
def test_format_trains_and_saves(job, tiny, case):
    kind, family, hyperparameters = CASES[case]
    job.add_model(tiny(family))
    job.add_sample_data(kind, train="training", n_train=48, n_val=8)
    quick = dict(QUICK)
    if {"batchSize", "batch_size"} & set(hyperparameters):  # aliases of per_device_train_batch_size
        del quick["per_device_train_batch_size"]
    job.hyperparameters({**quick, **hyperparameters})
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    metrics = job.metrics()
    assert metrics["data"]["format"] == kind
    assert metrics["data"]["validation_source"] == "channel"
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    if kind == "domain":
        assert "rougeL" not in metrics and metrics["data"]["train"]["trainable_share"] == 1.0
    else:
        share = metrics["data"]["train"]["trainable_share"]
        assert 0.0 <= metrics["rougeL"] <= 1.0
        assert share == 1.0 if family == "t5" else 0 < share < 1  # seq2seq labels are the target only
    meta = json.loads((job.model_dir / "tuneforge.json").read_text())
    assert meta["data_format"] == kind and meta["prompt"]["kind"] == kind
    assert (job.model_dir / "model.safetensors").exists()


def test_parquet_table_split_by_ratio(job, tiny):
    job.add_model(tiny("llama"))
    rows = [{"input": f"What color is item {i}?", "output": f"Item {i} is red."} for i in range(40)]
    pd.DataFrame(rows).to_parquet(job.channel("train") / "pairs.parquet")
    job.hyperparameters({**QUICK, "validation_split_ratio": "0.25", "max_val_samples": "-1"})
    assert job.run_in_process() == 0
    report = job.metrics()["data"]
    assert report["format"] == "table" and report["validation_source"] == "split 0.25"
    assert (report["train"]["rows"], report["validation"]["rows"]) == (30, 10)


def test_adapter_only_when_merge_weights_false(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=32, n_val=8)
    job.hyperparameters({**QUICK, "instruction_tuned": "True", "merge_weights": "False", "learning_rate": "0.01"})
    assert job.run_in_process() == 0
    names = {p.name for p in job.model_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tuneforge.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names
    meta = json.loads((job.model_dir / "tuneforge.json").read_text())
    assert meta["adapter_only"] is True and meta["base_model_path"] == str(job.base / "input/data/model")

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(meta["base_model_path"]), job.model_dir)
    out = model.generate(input_ids=__import__("torch").tensor([[1, 50, 60]]), max_new_tokens=3, min_new_tokens=3)
    assert out.shape == (1, 6)


def test_checkpoints_stay_out_of_model_dir(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=32, n_val=8)
    job.hyperparameters({**QUICK, "instruction_tuned": "True", "max_steps": "-1", "epoch": "2",
                         "save_total_limit": "1"})
    assert job.run_in_process() == 0
    checkpoints = sorted(p.name for p in (job.base / "checkpoints").iterdir())
    assert checkpoints and all(name.startswith("checkpoint-") for name in checkpoints)
    assert not any(p.name.startswith("checkpoint") for p in job.model_dir.iterdir())


def test_early_stopping_ends_a_run_that_stops_improving(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    job.hyperparameters({"instruction_tuned": "True", "epoch": "10", "learning_rate": "1e-9",
                         "per_device_train_batch_size": "8", "early_stopping_patience": "1",
                         "early_stopping_threshold": "0.01", "rouge_samples": "0"})
    assert job.run_in_process() == 0
    metrics = job.metrics()
    assert metrics["epochs"] == 2.0 and metrics["steps"] == 4  # epoch 1 sets the best, epoch 2 fails to beat it
