"""Length-grouped batching, packing and the chunked loss through a real job: on by default (packing
where it pays), recorded in metrics.json, every row trained once per epoch, in one process and in a
2-process DDP job."""

from __future__ import annotations

import json
import random

import pytest

from tuneforge.samples import _sentence, write_jsonl

EPOCHS = 2
SETTINGS = {"instruction_tuned": "True", "epoch": str(EPOCHS), "per_device_train_batch_size": "8",
            "learning_rate": "0.003", "rouge_samples": "0", "knowledge_check": "False",
            "early_stopping_patience": "0", "peft_type": "none", "max_input_length": "256"}


def _varied_rows(n: int, seed: int) -> list[dict]:
    """Instruction rows whose prompts run from a few to ~150 words, answers 1-30 words."""
    rng = random.Random(seed)
    return [{"instruction": _sentence(rng, rng.randint(3, 8)), "context": _sentence(rng, rng.randint(2, 150)),
             "response": _sentence(rng, rng.randint(1, 30))} for _ in range(n)]


def _prepare(job, tiny, n_train: int, settings: dict) -> None:
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=8, n_val=16)
    write_jsonl(job.base / "input" / "data" / "train" / "data.jsonl", _varied_rows(n_train, 1))
    job.hyperparameters({**SETTINGS, **settings})


def _check_every_row_once_per_epoch(metrics: dict) -> None:
    # the Trainer's own count of real (non-padding) input tokens, all ranks together
    assert metrics["train_tokens"] == metrics["data"]["train"]["tokens"] * EPOCHS


def test_a_job_groups_by_length_by_default_and_records_it(job, tiny):
    _prepare(job, tiny, 96, {})
    assert job.run_in_process() == 0
    metrics = job.metrics()
    batching = metrics["batching"]
    assert batching["strategy"] == "group_by_length"
    assert batching["padding_share_random_order"] > 0.25
    assert batching["padding_share"] < batching["padding_share_random_order"] / 2
    _check_every_row_once_per_epoch(metrics)
    assert metrics["steps"] == EPOCHS * 96 // 8
    history = json.loads((job.base / "output" / "data" / "log_history.json").read_text())
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses[-1] < losses[0] - 1.0  # it trained
    saved = json.loads((job.model_dir / "tuneforge.json").read_text())["hyperparameters"]
    assert saved["group_by_length"] is True and saved["per_device_eval_batch_size"] == -1
    # on CPU (SDPA) packing=auto leaves the batches padded, and the loss skips the full logits
    assert metrics["packing"]["enabled"] is False and "slower" in metrics["packing"]["why"]
    assert metrics["loss"] == {"kind": "chunked", "chunk": 1024}
    assert metrics["liger_kernel"]["enabled"] is False


@pytest.mark.slow
def test_packing_true_trains_the_same_rows_as_the_padded_job(job, tiny, tmp_path_factory):
    """packing=true on CPU: bins of max_input_length, the same steps and real tokens, and a final
    training loss within 2 % of the padded run with the same seed and batches."""
    _prepare(job, tiny, 96, {"packing": "true"})
    assert job.run_in_process() == 0
    packed = job.metrics()
    assert packed["packing"]["enabled"] is True and packed["packing"]["layout"] == "best-fit bins of up to 256 tokens"
    assert 0 <= packed["packing"]["padding_share"] < 0.5
    assert packed["steps"] == EPOCHS * 96 // 8
    _check_every_row_once_per_epoch(packed)
    from tests.conftest import Job

    padded_job = Job(tmp_path_factory.mktemp("padded") / "opt" / "ml")
    _prepare(padded_job, tiny, 96, {"packing": "false"})
    assert padded_job.run_in_process() == 0
    padded = padded_job.metrics()
    assert padded["packing"]["enabled"] is False
    assert packed["train_loss"] == pytest.approx(padded["train_loss"], rel=0.02)
    assert packed["eval_loss"] == pytest.approx(padded["eval_loss"], rel=0.02)  # evaluation stays padded


def test_packed_domain_adaptation_job(job, tiny):
    """Domain text with packing=true: the documents of a block become rows of their own."""
    job.add_model(tiny("llama"))
    job.add_sample_data("domain")
    job.hyperparameters({"epoch": "1", "per_device_train_batch_size": "4", "max_input_length": "64",
                         "packing": "true", "peft_type": "none", "early_stopping_patience": "0"})
    assert job.run_in_process() == 0
    metrics = job.metrics()
    assert metrics["data"]["format"] == "domain" and metrics["packing"]["enabled"] is True
    assert metrics["train_tokens"] == metrics["data"]["train"]["tokens"]


def test_packing_true_on_an_architecture_that_cannot_keep_rows_apart_fails_clearly(job, tiny):
    job.add_model(tiny("bloom"))
    job.add_sample_data("instruction", n_train=8, n_val=4)
    job.hyperparameters({"instruction_tuned": "True", "packing": "true", "epoch": "1"})
    assert job.run_in_process() != 0
    first = job.failure_first_line()
    assert "packing=true is not possible here" in first and "bloom" in first and "packing=auto" in first


def test_group_by_length_false_is_plain_random_batches(job, tiny):
    _prepare(job, tiny, 96, {"group_by_length": "False"})
    assert job.run_in_process() == 0
    metrics = job.metrics()
    assert metrics["batching"]["strategy"] == "random"
    assert metrics["batching"]["padding_share"] == metrics["batching"]["padding_share_random_order"]
    _check_every_row_once_per_epoch(metrics)


@pytest.mark.slow
def test_two_process_ddp_job_groups_by_length_and_trains_every_row_once(job, tiny):
    from tests.distributed.conftest import resource_config, run_job

    _prepare(job, tiny, 96, {})  # 96 rows = 6 steps of 2 ranks x 8 rows: no rank pads its last batch
    resource_config(job)
    code, log = run_job(job)
    assert code == 0, log[-3000:]
    metrics = job.metrics()
    assert metrics["distributed_type"] == "MULTI_CPU"
    assert metrics["batching"]["strategy"] == "group_by_length"
    assert metrics["steps"] == EPOCHS * 96 // 16
    _check_every_row_once_per_epoch(metrics)
