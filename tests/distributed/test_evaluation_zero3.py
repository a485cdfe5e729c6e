"""Evaluation tasks in a ZeRO-3 job of 2 CPU processes: after training every rank runs the
forward passes in lockstep (each gathers the shards), rank 0 records; the base is not scored
(its weights are partitioned before training sets DeepSpeed up) and says so, and a regression
limit that cannot be measured fails the gate."""

import json
import re
import shutil
from pathlib import Path

import pytest

from .conftest import run_job

pytestmark = pytest.mark.slow

HYPERPARAMETERS = {"instruction_tuned": "True", "max_steps": "2", "per_device_train_batch_size": "4",
                   "learning_rate": "0.01", "rouge_samples": "0", "knowledge_check": "False", "peft_type": "none",
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


def test_zero3_scores_the_tasks_after_training_in_lockstep(small_job):
    from tuneforge.evaluation.cli import evaluate

    job = small_job
    channel = _tasks(job)
    job.hyperparameters(dict(HYPERPARAMETERS, eval_max_regression="0.5"))
    code, log = run_job(job, timeout=600)
    metrics = job.metrics()
    assert metrics["parallelism"] == "deepspeed zero3"
    assert set(metrics["evaluation_skipped"]) == {"before"} and "ZeRO-3" in metrics["evaluation_skipped"]["before"]
    evaluation = metrics["evaluation"]
    assert set(evaluation) == {"answers", "choice", "qa", "trivia"}
    assert all(set(stages) == {"after"} for stages in evaluation.values())
    for name in evaluation:  # rank 0 alone prints
        assert len(re.findall(rf"\[metric\] final_eval_{name}=", log)) == 1, name
    # the scores of the sharded model are those of its saved, gathered weights scored whole
    whole = evaluate(job.model_dir, channel)
    for name, result in evaluation.items():
        assert result["after"]["score"] == pytest.approx(whole[name]["score"], abs=1e-6), name
    # no base score: the regression limit cannot be checked, so the gate fails the job, model/ kept
    assert code == 1 and (job.model_dir / "tuneforge.json").exists()
    assert "has no base score to measure a loss against" in job.failure_first_line()
