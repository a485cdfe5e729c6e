"""Bad input: non-zero exit, a failure file whose first line names the problem, where, and the fix,
and nothing left in model/."""

import json

import pytest


def _rows(channel, rows, name="rows.jsonl"):
    (channel / name).write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))


def malformed_line(job):
    _rows(job.channel("train"), [{"prompt": "a", "completion": "b"}, '{"prompt": "c", "completion": \n'])
    return {"instruction_tuned": "True"}, ["DataError", "rows.jsonl:2", "malformed JSON"]


def missing_template_field(job):
    channel = job.channel("train")
    (channel / "template.json").write_text(json.dumps({"prompt": "{question}", "completion": "{answer}"}))
    _rows(channel, [{"question": "q", "answer": "a"}, {"question": "q", "answer": "a"}, {"answer": "a"}])
    return {"instruction_tuned": "True"}, ["rows.jsonl:3", "'question'", "template"]


def empty_channel(job):
    job.channel("training")
    return {}, ["DataError", "training", "empty"]


def two_domain_files(job):
    (job.channel("train") / "a.txt").write_text("some text\n")
    (job.channel("train") / "b.csv").write_text("text\nmore\n")
    return {}, ["exactly one", "a.txt", "b.csv", "instruction_tuned=True"]


def table_missing_column(job):
    (job.channel("train") / "t.csv").write_text("input,answer\nq,a\n")
    return {}, ["t.csv", "missing column 'output'", "exactly two columns"]


def table_extra_column(job):
    (job.channel("train") / "t.csv").write_text("input,output,score\nq,a,1\n")
    return {}, ["t.csv", "extra column 'score'"]


def unknown_hyperparameter(job):
    job.add_sample_data("instruction")
    return {"lora_rank": "8"}, ["HyperparameterError", "lora_rank", "did you mean 'lora_r'?"]


def out_of_range(job):
    job.add_sample_data("instruction")
    return {"validation_split_ratio": "1.5"}, ["validation_split_ratio", "out of range", "<= 0.9"]


def no_base_model(job):
    job.add_sample_data("instruction")
    return {"instruction_tuned": "True"}, ["ModelError", "no base model", "`model` channel"]


def no_training_channel(job):
    return {}, ["no training data channel", "`train` or `training`"]


def quantization_on_cpu(job):
    job.add_sample_data("instruction")
    return {"instruction_tuned": "True", "int8_quantization": "True"}, ["ResourceError", "GPU"]


CASES = [malformed_line, missing_template_field, empty_channel, two_domain_files, table_missing_column,
         table_extra_column, unknown_hyperparameter, out_of_range, no_base_model, no_training_channel,
         quantization_on_cpu]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_fails_clearly(job, tiny, case):
    hyperparameters, expected = case(job)
    if case is not no_base_model:
        job.add_model(tiny("llama"))
    job.hyperparameters(hyperparameters)
    assert job.run_in_process() == 1
    first = job.failure_first_line()
    for fragment in expected:
        assert fragment in first, f"{fragment!r} not in {first!r}"
    assert "Fix:" in first
    assert list(job.model_dir.iterdir()) == []


def test_cli_exit_code_and_each_run_its_own_failure(job, tiny):
    job.add_model(tiny("llama"))
    malformed_line(job)
    job.hyperparameters({"instruction_tuned": "True"})
    result = job.run_cli()
    assert result.returncode == 1
    first = job.failure_first_line()
    assert "rows.jsonl:2" in first
    job.hyperparameters({"instruction_tuned": "True", "epoch": "0"})
    assert job.run_cli().returncode == 1
    # the rerun's own reason; the earlier run's is kept beside it
    assert job.failure_first_line().startswith("HyperparameterError: hyperparameter epoch")
    assert (job.base / "output" / "previous-failure.txt").read_text().splitlines()[0] == first


def test_failure_during_training_leaves_model_dir_empty(job, tiny, monkeypatch):
    """A crash after training (while saving) must not leave half a model behind."""
    from tuneforge.llm import recipe

    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    job.hyperparameters({"instruction_tuned": "True", "max_steps": "1", "rouge_samples": "0"})

    def explode(self):  # runs after the model files were moved into model/
        assert self.writer.published
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recipe.Recipe, "write_reports", explode)
    assert job.run_in_process() == 1
    assert job.failure_first_line().startswith("OSError: [Errno 28] No space left on device")
    assert list(job.model_dir.iterdir()) == []


def test_an_earlier_failure_is_moved_aside_by_a_rerun(job, tiny):
    """A run that succeeds leaves no failure file; the earlier one is kept, not lost."""
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    job.hyperparameters({"instruction_tuned": "True", "max_steps": "1", "rouge_samples": "0"})
    job.failure.parent.mkdir(parents=True, exist_ok=True)
    job.failure.write_text("ValueError: something the operator must see\n")
    assert job.run_in_process() == 0
    assert not job.failure.exists()
    assert (job.base / "output" / "previous-failure.txt").read_text() == "ValueError: something the operator must see\n"
