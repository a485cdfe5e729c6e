"""Hostile data through the real `train` command: what used to crash with a raw Python error, train
on the wrong thing, or exhaust memory now fails clearly (file, line, fix) or trains as meant."""

import json
import subprocess
import sys

import pytest

QUICK = {"max_steps": "1", "rouge_samples": "0", "per_device_train_batch_size": "4", "logging_steps": "1"}


def _rows(channel, rows, name="rows.jsonl"):
    (channel / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def positional_template_field(job):
    channel = job.channel("train")
    (channel / "template.json").write_text(json.dumps({"prompt": "Question: {}", "completion": "{answer}"}))
    _rows(channel, [{"question": "q", "answer": "a"}] * 4)
    return {"instruction_tuned": "True"}, ["DataError", "template.json", "positional placeholder {}",
                                           "Fix: name every placeholder"]


def table_not_utf8(job):
    (job.channel("train") / "t.csv").write_bytes(b"input;output\nq;a\nCaf\xe9 au lait?;Oui.\n")
    return {}, ["DataError", "t.csv:3", "not UTF-8", "Fix: save the file as UTF-8"]


def jsonl_not_utf8(job):
    (job.channel("train") / "rows.jsonl").write_bytes(b'{"prompt": "a", "completion": "b"}\n'
                                                      b'{"prompt": "caf\xe9", "completion": "b"}\n')
    return {"instruction_tuned": "True"}, ["DataError", "rows.jsonl:2", "not UTF-8", "Fix:"]


def prompts_truncated_away(job):
    _rows(job.channel("train"), [{"prompt": f"What is item {i}?", "completion": "It is a green lime. " * 4}
                                 for i in range(12)])
    return {"instruction_tuned": "True", "max_input_length": "8"}, [
        "DataError", "rows.jsonl:", "rows lose their whole prompt to truncation at max_input_length=8",
        "Fix: raise max_input_length"]


def header_not_split(job):
    (job.channel("train") / "t.csv").write_text("input output\nq a\n")
    return {}, ["DataError", "t.csv:1", "names input and output", "Fix: write the header as input,output"]


def duplicated_column(job):
    (job.channel("train") / "t.csv").write_text("input,input,output\nq,r,a\n")
    return {}, ["DataError", "t.csv", "the column 'input' appears 2 times", "Fix: keep one 'input' column"]


def field_that_is_a_list(job):
    _rows(job.channel("train"), [{"prompt": "q", "completion": "a"}, {"prompt": ["q", "r"], "completion": "a"}])
    return {"instruction_tuned": "True"}, ["DataError", "rows.jsonl:2", "field 'prompt' holds a list, not text"]


def link_out_of_the_channel(job):
    (job.channel("train") / "d.txt").symlink_to("/etc/passwd")
    return {}, ["DataError", "d.txt", "the file is a link to /etc/passwd, outside the channel"]


def template_conversion(job):
    channel = job.channel("train")
    (channel / "template.json").write_text(json.dumps({"prompt": "Q: {question!r}", "completion": "{answer}"}))
    _rows(channel, [{"question": "q", "answer": "a"}] * 4)
    return {"instruction_tuned": "True"}, ["DataError", "template.json", "template 'prompt' has the placeholder "
                                           "{question!r}, with a conversion (!r)"]


def chat_template_reaching_for_python(job):
    _rows(job.channel("train"), [{"messages": [{"role": "user", "content": "hi"},
                                               {"role": "assistant", "content": "hello"}]}] * 4)
    return {"chat_dataset": "True", "chat_template": "{{ ''.__class__.__mro__ }}"}, [
        "HyperparameterError", "hyperparameter chat_template", "touches Python objects"]


def no_training_rows(job):
    _rows(job.channel("train"), [{"prompt": "q", "completion": "a"}] * 4)
    return {"instruction_tuned": "True", "max_train_samples": "0"}, [
        "HyperparameterError", "hyperparameter max_train_samples: 0 is out of range", "Fix: use -1 (all rows)"]


CASES = [positional_template_field, table_not_utf8, jsonl_not_utf8, prompts_truncated_away, header_not_split,
         duplicated_column, field_that_is_a_list, link_out_of_the_channel, template_conversion,
         chat_template_reaching_for_python, no_training_rows]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_hostile_data_fails_clearly(job, tiny, case):
    hyperparameters, expected = case(job)
    job.add_model(tiny("llama"))
    job.hyperparameters(hyperparameters)
    assert job.run_in_process() != 0
    first = job.failure_first_line()
    for fragment in expected:
        assert fragment in first, f"{fragment!r} not in {first!r}"
    assert list(job.model_dir.iterdir()) == []


def test_cli_reports_a_raw_decode_error_as_data_error(job, tiny):
    job.add_model(tiny("llama"))
    _, expected = table_not_utf8(job)
    job.hyperparameters({})
    result = job.run_cli()
    assert result.returncode != 0
    assert "UnicodeDecodeError" not in result.stdout + result.stderr
    assert job.failure_first_line().startswith("DataError: ") and "t.csv:3" in job.failure_first_line()


def test_semicolon_table_trains_as_a_table(job, tiny):
    job.add_model(tiny("llama"))
    rows = [(f"What color is lime number {i}?", "Green; always green.") for i in range(12)]
    (job.channel("train") / "t.csv").write_text(
        "input;output\n" + "".join(f'{q};"{a}"\n' for q, a in rows))
    job.hyperparameters(dict(QUICK, validation_split_ratio="0.25"))
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    data = job.metrics()["data"]
    assert data["format"] == "table"
    assert data["train"]["rows"] + data["validation"]["rows"] == 12
    assert 0 < data["train"]["trainable_share"] < 1  # prompts masked: it did not train as domain text


MEASURE = """
import json, resource, sys
from pathlib import Path
from transformers import AutoTokenizer
from tuneforge.config import parse_hyperparameters
from tuneforge.data import read_channel, tokenize_examples

tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
tokenizer("warm up")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
data = read_channel(Path(sys.argv[1]), parse_hyperparameters({"instruction_tuned": "True"}))
tokens = tokenize_examples(data.examples, tokenizer, data.prompt, max_len=64, max_out=8, seq2seq=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "report": tokens.report()}))
"""


def test_a_20_mb_row_is_read_and_tokenized_in_bounded_memory(tmp_path, tiny):
    channel = tmp_path / "train"
    channel.mkdir()
    with open(channel / "big.jsonl", "w") as handle:
        handle.write(json.dumps({"prompt": "The lime is green. " * 1_100_000, "completion": "Green."}) + "\n")
        handle.write(json.dumps({"prompt": "Color of snow?", "completion": "White."}) + "\n")
    assert (channel / "big.jsonl").stat().st_size > 20_000_000
    result = subprocess.run([sys.executable, "-c", MEASURE, str(channel), str(tiny("llama"))],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.splitlines()[-1])
    # the line, its decoded text, the parsed field and the rendered prompt: ~4 x 21 MB. Tokenizing
    # all of it would take gigabytes.
    assert measured["growth_mb"] < 250, measured["growth_mb"]
    report = measured["report"]
    assert report["rows_truncated"] == 1 and report["truncated_examples"] == ["big.jsonl:1"]
    assert report["long_rows_cut_before_tokenizing"] == ["big.jsonl:1"]
    assert report["rows_prompt_lost"] == 0 and report["sequences"] == 2


def test_a_validation_channel_equal_to_the_training_rows_is_warned_about(job, tiny, capfd):
    job.add_model(tiny("llama"))
    rows = [{"prompt": f"What is item {i}?", "completion": f"It is number {i}."} for i in range(8)]
    _rows(job.channel("train"), rows)
    _rows(job.channel("validation"), rows[:4] + [{"prompt": "Unseen?", "completion": "Yes."}] * 4, "val.jsonl")
    job.hyperparameters(dict(QUICK, instruction_tuned="True"))
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    overlap = job.metrics()["validation_overlap"]
    assert (overlap["rows"], overlap["of"], overlap["share"]) == (4, 8, 0.5)
    assert overlap["note"].startswith("4 of 8 validation rows (50%) are also in the training data")
    log = "".join(capfd.readouterr())
    assert "are also in the training data" in log and "(first: val.jsonl:1, val.jsonl:2, val.jsonl:3)" in log
    assert "Warning: 4 of 8 validation rows (50%)" in (job.base / "output" / "data" / "report.md").read_text()


CHECKPOINTS = {"instruction_tuned": "True", "peft_type": "none", "max_steps": "6", "checkpoint_steps": "2",
               "save_total_limit": "5", "per_device_train_batch_size": "4", "rouge_samples": "0", "logging_steps": "1",
               "evaluation_strategy": "no", "knowledge_check": "False"}


@pytest.mark.parametrize("background", [True, False], ids=["background-writer", "written-at-once"])
def test_a_full_disk_while_checkpointing_names_the_folder_and_keeps_the_last_complete_one(job, tiny, monkeypatch,
                                                                                          background):
    import errno

    from transformers import modeling_utils

    from tuneforge.job.checkpoints import complete_checkpoints

    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=32, n_val=4)
    job.hyperparameters({**CHECKPOINTS, "async_checkpoint": str(background)})
    real_save = modeling_utils.safe_save_file

    def full_at_step_4(tensors, filename, *args, **kwargs):
        if "checkpoint-4" in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(modeling_utils, "safe_save_file", full_at_step_4)
    assert job.run_in_process() == 1
    checkpoints = job.base / "checkpoints"
    first = job.failure_first_line()
    assert first.startswith(f"ResourceError: {checkpoints}: no space left while writing checkpoint-4 ([Errno 28] No "
                            "space left on device): a checkpoint takes about ")
    assert f"the partial checkpoint was removed and {checkpoints / 'checkpoint-2'} (the last complete one) is kept" \
        in first and "Fix: give the job more disk" in first and "save_total_limit=5" in first
    assert complete_checkpoints(checkpoints) == [checkpoints / "checkpoint-2"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2"]
    assert list(job.model_dir.iterdir()) == []
    monkeypatch.setattr(modeling_utils, "safe_save_file", real_save)  # space freed: the rerun resumes
    assert job.run_in_process() == 0, job.failure_first_line()
    assert job.metrics()["resumed_from"] == str(checkpoints / "checkpoint-2") and job.metrics()["steps"] == 6
