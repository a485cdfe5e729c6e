"""The tiny Llama's first 4 training losses, pinned to 4 decimals (fp32, fixed seed), as torchtune's
recipe tests pin theirs: any change to data order, masking, batching, the optimizer or the
TrainingArguments mapping moves them. Runs the real job in process, so it is in the slow lane.

If a change is meant to move them (a new default, a new transformers), rerun this file with
-s and update GOLDEN from the printed values, saying why in the commit."""

import json

import pytest

pytestmark = pytest.mark.slow

HYPERPARAMETERS = {"instruction_tuned": "True", "max_steps": "4", "logging_steps": "1", "seed": "10",
                   "precision": "fp32", "per_device_train_batch_size": "4", "learning_rate": "0.01",
                   "peft_type": "none", "evaluation_strategy": "no", "rouge_samples": "0",
                   "knowledge_check": "False", "checkpoint_steps": "4"}
GOLDEN = [6.7848, 6.4103, 5.8384, 5.2819]  # training loss at steps 1..4


def test_tiny_llama_loss_curve_is_pinned(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=32, n_val=4)
    job.hyperparameters(HYPERPARAMETERS)
    assert job.run_in_process() == 0
    history = json.loads((job.base / "output" / "data" / "log_history.json").read_text())
    losses = [entry["loss"] for entry in history if "loss" in entry]
    print("losses:", [round(loss, 4) for loss in losses])
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3, 4]
    assert losses == pytest.approx(GOLDEN, abs=1e-4)
    assert losses[-1] < losses[0] - 0.05  # and it learns
