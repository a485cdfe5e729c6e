"""Evaluation tasks in a ZeRO-3 job of 2 CPU processes: before and after training every rank runs
the forward passes in lockstep, rank 0 records. After training DeepSpeed's engine gathers the
shards; before it exists (the base's weights were partitioned as they loaded) each module gathers
its own (llm/lockstep.py). The greedy answers and the general-knowledge check run there too."""

import json
import re
import shutil
from pathlib import Path

import pytest

from .conftest import run_job

pytestmark = pytest.mark.slow

HYPERPARAMETERS = {"instruction_tuned": "True", "max_steps": "2", "per_device_train_batch_size": "4",
                   "learning_rate": "0.01", "rouge_samples": "2", "knowledge_check": "True", "peft_type": "none",
                   "deepspeed": "zero3", "seed": "3"}
CHANNEL = Path(__file__).parents[1] / "unit" / "lm_eval_channel"  # trivia.yaml, qa.yaml, data/


def _tasks(job) -> Path:
    channel = job.channel("evaluation")
    shutil.copytree(CHANNEL, channel, dirs_exist_ok=True)
    (channel / "choice.jsonl").write_text("".join(json.dumps(item) + "\n" for item in [
        {"question": "What color is a ripe banana?", "choices": ["yellow", "blue", "purple"], "answer": 0},
        {"question": "How many legs does a spider have?", "choices": ["six", "eight", "ten"], "answer": 1}]))
    (channel / "answers.jsonl").write_text(json.dumps({"instruction": "Say yes.", "reference": "yes"}) + "\n")
    return channel


def test_zero3_scores_the_tasks_before_and_after_training_in_lockstep(small_job):
    from tuneforge.evaluation.cli import evaluate

    job = small_job
    channel = _tasks(job)
    job.hyperparameters(dict(HYPERPARAMETERS, eval_max_regression="1"))
    code, log = run_job(job, timeout=600)
    assert code == 0, log[-4000:]
    metrics = job.metrics()
    assert metrics["parallelism"] == "deepspeed zero3" and "evaluation_skipped" not in metrics
    evaluation = metrics["evaluation"]
    assert set(evaluation) == {"answers", "choice", "qa", "trivia"}
    assert all(set(stages) == {"before", "after"} for stages in evaluation.values())
    for name in evaluation:  # rank 0 alone prints
        for line in ("base_eval", "final_eval"):
            assert len(re.findall(rf"\[metric\] {line}_{name}=", log)) == 1, (line, name)
    # the sharded scores are those of the same weights scored whole: the saved model/ after
    # training; before it, the base (the tasks that do not read the job's prompt template)
    whole = evaluate(job.model_dir, channel)
    base_tasks = job.base.parent / "base-tasks"
    shutil.copytree(channel, base_tasks, ignore=shutil.ignore_patterns("answers.jsonl"))
    base = evaluate(job.channel("model"), base_tasks)
    for name, result in evaluation.items():
        assert result["after"]["score"] == pytest.approx(whole[name]["score"], abs=1e-6), name
        if name in base:
            assert result["before"]["score"] == pytest.approx(base[name]["score"], abs=1e-6), name
    assert set(base) == {"choice", "qa", "trivia"}
    # the greedy answers and the general-knowledge check before training, on the partitioned base
    assert set(metrics["general_knowledge"]) == {"before", "after"}
    samples = [json.loads(line) for line in (job.base / "output" / "data" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and all(isinstance(s["before"], str) and isinstance(s["after"], str) for s in samples)
    assert metrics["eval_before_skipped"] == "DeepSpeed/FSDP engines are built once per Trainer"  # the loss alone
