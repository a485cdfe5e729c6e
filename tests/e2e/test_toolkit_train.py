"""The real `train` of sagemaker-training, wired to our launcher, on a temporary /opt/ml tree."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TRAIN = Path(sys.executable).parent / "train"
LEARN = {"instruction_tuned": "True", "peft_type": '"none"', "epoch": "8", "learning_rate": "0.003",
         "per_device_train_batch_size": "16", "per_device_eval_batch_size": "16", "rouge_samples": "24",
         "max_output_length": "16", "sagemaker_program": '"ignored.py"', "sagemaker_region": '"us-east-1"'}


def run_toolkit(job, timeout=900):
    """Lay out the config files SageMaker writes (the toolkit exits 0 silently without them)."""
    channels = {p.name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                         "RecordWrapperType": "None"} for p in (job.base / "input" / "data").iterdir()}
    (job.base / "input" / "config" / "inputdataconfig.json").write_text(json.dumps(channels))
    (job.base / "output").mkdir(exist_ok=True)
    (job.base / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo"}))
    env = dict(os.environ, SAGEMAKER_BASE_DIR=str(job.base), SM_STUDIO_LOCAL_MODE="true",
               SAGEMAKER_TRAINING_MODULE="tuneforge.recipes:main")
    return subprocess.run([str(TRAIN)], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_tiny_llama_learns_an_instruction_task_through_train(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", train="training")
    job.hyperparameters(LEARN)
    result = run_toolkit(job)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Reporting training SUCCESS" in result.stdout + result.stderr
    assert not job.failure.exists()

    metrics = job.metrics()
    for key in ("train_loss", "eval_loss_before", "eval_loss", "perplexity_before", "perplexity",
                "rouge1", "rouge2", "rougeL", "rougeLsum", "rouge_before", "data", "steps"):
        assert key in metrics, key
    assert metrics["eval_loss"] <= 0.5 * metrics["eval_loss_before"]
    assert metrics["rouge_before"]["rougeL"] < 0.1
    assert metrics["rougeL"] > 0.8
    assert metrics["data"]["format"] == "instruction" and metrics["data"]["train"]["rows"] == 320
    # the metric lines SageMaker metric definitions read (regexes in README.md)
    import re

    from tuneforge.contract import SFT_METRIC_DEFINITIONS

    output = result.stdout + result.stderr
    for definition in SFT_METRIC_DEFINITIONS:  # an SFT job prints every one of these
        found = re.findall(definition["Regex"], output)
        assert found, definition
        float(found[-1])
    final_eval = re.findall(r"\[metric\] final_eval_loss=([0-9.]+)", output)[-1]
    assert abs(float(final_eval) - metrics["eval_loss"]) < 1e-4

    # model/ reloads with the Auto classes and answers a validation question
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.data.prompt import PromptFormat, encode_prompt

    meta = json.loads((job.model_dir / "tuneforge.json").read_text())
    assert meta["adapter_only"] is False and meta["data_format"] == "instruction"
    assert not (job.model_dir / "checkpoint-1").exists() and not list(job.model_dir.glob("checkpoint-*"))
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    model = AutoModelForCausalLM.from_pretrained(job.model_dir)
    prompt = PromptFormat.from_dict(meta["prompt"]).render_prompt(
        {"instruction": "What color is the banana?", "context": "Many people walk near the river."})
    ids = encode_prompt(tokenizer, prompt, seq2seq=False)
    import torch

    out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
    assert tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip() == "The banana is yellow."


def test_toolkit_reports_our_failure(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", train="training")
    job.hyperparameters({"instruction_tuned": "True", "learning_rat": "0.1"})
    result = run_toolkit(job, timeout=300)
    assert result.returncode != 0
    assert job.failure_first_line() == ("HyperparameterError: hyperparameter learning_rat: unknown hyperparameter. "
                                        "Fix: did you mean 'learning_rate'?")
    assert not any(job.model_dir.iterdir())
