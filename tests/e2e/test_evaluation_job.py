"""The `evaluation` channel inside a training job: its tasks scored before and after training on
rank 0, metric lines, metrics.json, and the gate that fails a job while keeping its model/."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

QUICK = {"instruction_tuned": "True", "max_steps": "2", "rouge_samples": "0", "per_device_train_batch_size": "4",
         "logging_steps": "1", "knowledge_check": "False"}


def _tasks(job) -> None:
    channel = job.channel("evaluation")
    (channel / "trivia.jsonl").write_text("".join(json.dumps(item) + "\n" for item in [
        {"question": "What color is a ripe banana?", "choices": ["yellow", "blue", "purple"], "answer": 0},
        {"question": "How many legs does a spider have?", "choices": ["six", "eight", "ten"], "answer": 1}]))
    (channel / "answers.jsonl").write_text(json.dumps({"instruction": "Say yes.", "reference": "yes"}) + "\n")


def test_tasks_are_scored_before_and_after_training(job, tiny, capfd):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    _tasks(job)
    job.hyperparameters(QUICK)
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    evaluation = job.metrics()["evaluation"]
    assert set(evaluation) == {"answers", "trivia"}
    for stage in ("before", "after"):
        assert evaluation["trivia"][stage]["kind"] == "multiple_choice" and evaluation["trivia"][stage]["items"] == 2
        assert 0 <= evaluation["trivia"][stage]["acc"] <= 1
        assert evaluation["answers"][stage]["kind"] == "generation"
    log = "".join(capfd.readouterr())
    assert "[metric] base_eval_trivia=" in log and "[metric] final_eval_answers=" in log
    _check_metric_definitions(log, evaluation)
    report = (job.base / "output" / "data" / "report.md").read_text()
    assert "task trivia (accuracy)" in report and "task answers (ROUGE-L)" in report


PAIRS = [{"prompt": f"What is fruit number {i}?", "chosen": "It is blue.", "rejected": "It is red."} for i in range(8)]
KINDS = {"full": {"peft_type": "none"},
         "qlora-nf4": {"load_in_4bit": "True", "quant_type": "nf4", "double_quant": "True"},
         "dpo-lora": {"training_method": "dpo", "instruction_tuned": "False"}}


@pytest.mark.parametrize("kind", KINDS)
def test_every_language_model_job_kind_scores_the_tasks(job, tiny, monkeypatch, kind):
    """Full fine-tuning, QLoRA (bitsandbytes' CPU kernels, see test_quantized.py) and a preference
    job score the same tasks before and after training; the scores are those of the base and of
    model/ scored whole (not for QLoRA, scored on its 4-bit weights)."""
    from tuneforge.evaluation.cli import evaluate

    monkeypatch.setenv("TUNEFORGE_ALLOW_CPU_QUANTIZATION", "1")
    job.add_model(tiny("llama"))
    if kind.startswith("dpo"):
        for channel in ("train", "validation"):
            (job.channel(channel) / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    else:
        job.add_sample_data("instruction", n_train=16, n_val=4)
    _tasks(job)
    (job.channel("evaluation") / "answers.jsonl").unlink()  # its template fields are the instruction format's
    job.hyperparameters({**QUICK, **KINDS[kind]})
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    trivia = job.metrics()["evaluation"]["trivia"]
    assert set(trivia) == {"before", "after"}
    if kind.startswith("qlora"):  # scored on the 4-bit weights; model/ holds the merged float ones
        assert all(0 <= trivia[stage]["acc"] <= 1 for stage in trivia)
        return
    base = evaluate(job.channel("model"), job.channel("evaluation"))["trivia"]
    assert trivia["before"]["acc"] == base["acc"] and trivia["before"]["acc_norm"] == base["acc_norm"]
    assert trivia["after"]["score"] == pytest.approx(evaluate(job.model_dir, job.channel("evaluation"))["trivia"]["score"])


def _check_metric_definitions(log: str, evaluation: dict) -> None:
    """`tuneforge metric-definitions --tasks` regexes, as SageMaker applies them to the job's log: each
    task's base/final definition finds its one line and value; none of the fixed ones finds a task line."""
    import re

    from tuneforge.contract import METRIC_DEFINITIONS, task_metric_definitions

    for definition in task_metric_definitions(sorted(evaluation)):
        stage, name = definition["Name"].split(":eval_")
        score = evaluation[name]["before" if stage == "base" else "after"]["score"]
        assert [float(v) for v in re.findall(definition["Regex"], log)] == [pytest.approx(score, abs=1e-6)]
    names = "|".join(map(re.escape, evaluation))
    task_lines = [line for line in log.splitlines() if re.match(rf"\[metric\] (base|final)_eval_({names})=", line)]
    assert len(task_lines) == 2 * len(evaluation)
    assert not [d["Name"] for d in METRIC_DEFINITIONS for line in task_lines if re.search(d["Regex"], line)]


def test_a_missed_gate_fails_the_job_and_keeps_the_model(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    _tasks(job)
    job.hyperparameters(dict(QUICK, eval_min_score="trivia=1.01"))  # no score reaches it
    assert job.run_in_process() == 1
    first = job.failure_first_line()
    assert first.startswith("EvaluationGateFailed: hyperparameters eval_min_score/eval_max_regression: task trivia: "
                            "score ") and "is below the minimum 1.01" in first
    assert (job.model_dir / "tuneforge.json").exists()  # the model was saved before the gate
    assert job.metrics()["evaluation_gate"]["passed"] is False
    assert "Warning: the evaluation gate failed the job (model/ was saved): task trivia: score" in (
        job.base / "output" / "data" / "report.md").read_text()


def test_a_bad_task_file_fails_before_training(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    (job.channel("evaluation") / "broken.jsonl").write_text('{"question": "q", "choices": ["a"], "answer": 0}\n')
    job.hyperparameters(QUICK)
    assert job.run_in_process() == 1
    assert "broken.jsonl:1: `choices` must be a list of at least two non-empty strings" in job.failure_first_line()


def test_sigterm_during_the_tasks_stops_and_the_rerun_scores_and_saves(job, tiny, monkeypatch):
    import os
    import signal

    from tuneforge.llm.recipe import Recipe

    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    _tasks(job)
    job.hyperparameters(dict(QUICK, checkpoint_steps="2"))
    real = Recipe._score_tasks

    def signalled(self, stage):
        if stage == "after":
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, stage)

    monkeypatch.setattr(Recipe, "_score_tasks", signalled)
    assert job.run_in_process() == 143
    assert job.failure_first_line().startswith("stopped by SIGTERM during the final evaluation")
    assert list(job.model_dir.iterdir()) == []
    assert all("after" not in task for task in job.metrics()["evaluation"].values())
    monkeypatch.undo()
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    evaluation = job.metrics()["evaluation"]
    assert all({"before", "after"} <= set(task) for task in evaluation.values())


def test_tasks_past_the_time_budget_are_reported_unscored(job, tiny, monkeypatch):
    from tuneforge.llm import recipe

    monkeypatch.setattr(recipe, "EVAL_TIME_BUDGET_S", 0.0)
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    _tasks(job)
    job.hyperparameters(dict(QUICK, eval_min_score="trivia=0.1"))
    assert job.run_in_process() == 1  # a task with a minimum that was not scored fails the gate
    assert job.metrics()["evaluation_unscored"] == {"before": ["answers", "trivia"], "after": ["answers", "trivia"]}
    assert "task 'trivia' has a minimum score but was not scored" in job.failure_first_line()


def _lm_eval_hf(model_dir, channel, tasks: list[str], **options) -> dict:
    """lm-eval's own `hf` model on the channel's YAMLs (run from the channel: their data_files are relative)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=tasks,
                                   device="cpu", batch_size=8, bootstrap_iters=0,
                                   task_manager=TaskManager(include_path=str(channel), include_defaults=False),
                                   **options)


def test_lm_eval_yaml_tasks_score_as_lm_eval_scores_the_base_and_the_fine_tune(job, tiny, capfd, monkeypatch):
    """trivia.yaml (multiple choice, first metric acc_norm) and qa.yaml (generate_until, exact_match)
    with their data in the channel's data/ folder: the job's before/after scores are lm-eval's own
    `hf` model's on the base model and on the saved model/."""
    import re
    import shutil
    from pathlib import Path

    from tests.unit.test_evaluation_harness import without_max_new_tokens

    channel = job.channel("evaluation")
    shutil.copytree(Path(__file__).parents[1] / "unit" / "lm_eval_channel", channel, dirs_exist_ok=True)
    monkeypatch.chdir(channel)
    base_dir = without_max_new_tokens(tiny("llama"), job.base.parent / "base-model")
    # qa's references are the base model's own greedy answers: 1.0 before; training changes the answers
    base = _lm_eval_hf(base_dir, channel, ["tiny_qa"], log_samples=True)["samples"]["tiny_qa"]
    answers = {s["doc_id"]: s["filtered_resps"][0] for s in base}
    rows = [json.loads(line) for line in (channel / "data" / "qa.jsonl").read_text().splitlines()]
    (channel / "data" / "qa.jsonl").write_text("".join(json.dumps(dict(row, answer=answers[i])) + "\n"
                                                       for i, row in enumerate(rows)))
    job.add_model(base_dir)
    job.add_sample_data("instruction", n_train=16, n_val=4)
    job.hyperparameters(dict(QUICK, learning_rate="0.01"))
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    log = "".join(capfd.readouterr())
    evaluation = job.metrics()["evaluation"]
    assert set(evaluation) == {"qa", "trivia"}  # data/*.jsonl are the YAMLs' data, not tasks
    assert evaluation["qa"]["before"]["score"] == 1.0 and evaluation["qa"]["after"]["score"] < 1.0
    for stage, model_dir, prefix in (("before", base_dir, "base"), ("after", job.model_dir, "final")):
        theirs = _lm_eval_hf(model_dir, channel, ["tiny_trivia", "tiny_qa"])["results"]
        trivia, qa = evaluation["trivia"][stage], evaluation["qa"][stage]
        assert trivia["metric"] == "acc_norm,none" and trivia["items"] == 6 and qa["items"] == 4
        assert trivia["score"] == pytest.approx(theirs["tiny_trivia"]["acc_norm,none"], abs=1e-9)
        assert trivia["metrics"]["acc,none"] == pytest.approx(theirs["tiny_trivia"]["acc,none"], abs=1e-9)
        assert qa["score"] == pytest.approx(theirs["tiny_qa"]["exact_match,none"], abs=1e-9)
        for name in ("trivia", "qa"):
            line = re.search(rf"\[metric\] {prefix}_eval_{name}=([0-9.]+)", log)
            assert line and float(line.group(1)) == pytest.approx(evaluation[name][stage]["score"], abs=1e-6)
