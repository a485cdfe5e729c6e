"""Two ranks on one node over gloo: the node's local main process reads the rows and tokenizes them
once into a node-local Arrow folder; the other rank takes the validation rows from it, waits, maps the
same files, and both train on the same rows."""

import re

import pytest

from .conftest import resource_config, run_job

pytestmark = pytest.mark.slow


def test_only_local_rank_0_tokenizes_and_both_ranks_read_the_same_rows(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=64, n_val=8)
    job.hyperparameters({"instruction_tuned": "True", "per_device_train_batch_size": "4", "max_steps": "2",
                         "rouge_samples": "0", "knowledge_check": "False", "preprocessing_num_workers": "2"})
    resource_config(job)
    code, log = run_job(job)
    assert code == 0, log[-3000:]
    # only rank 0 reads the rows' text; rank 1 takes the counts and the validation rows from it
    assert re.findall(r"rank (\d) read (\d+) training and (\d+) validation rows", log) == [("0", "64", "8")]
    assert re.findall(r"rank (\d) took the data as read by the node's local main process: (\d+) training rows, "
                      r"(\d+) validation rows", log) == [("1", "64", "8")]
    assert len(list((job.base / ".tuneforge-tokenized").glob("*/rows-*.json"))) == 1
    tokenized = re.findall(r"tokenized (\d+) rows into \d+ sequences in (\S+)", log)
    assert [(rows, folder.rsplit("/", 1)[-1]) for rows, folder in tokenized] == [("64", "train"), ("8", "validation")]
    reads = re.findall(r"rank (\d) read the tokenized data from (\S+) \((\d+) sequences, fingerprint (\w+)\)", log)
    train = {rank: (folder, sequences, fingerprint) for rank, folder, sequences, fingerprint in reads
             if folder.endswith("/train")}
    assert set(train) == {"0", "1"} and train["0"] == train["1"]  # the same files, the same rows
    assert train["0"][1] == "64"
    cache = job.base / ".tuneforge-tokenized"
    assert list(cache.glob("*/train/tokens.arrow")) and not list(job.model_dir.rglob("*.arrow"))
    assert not list((job.base / "output").rglob("*.arrow")) and not list((job.base / "checkpoints").rglob("*.arrow"))


def test_bad_data_found_by_the_tokenizing_rank_fails_the_job_with_its_message(job, tiny):
    import json

    job.add_model(tiny("llama"))
    rows = [{"prompt": f"Color of fruit {i}?", "completion": "Green."} for i in range(15)]
    rows.append({"prompt": "Color of the last fruit?", "completion": ""})
    (job.channel("train") / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job.hyperparameters({"instruction_tuned": "True", "max_steps": "1", "rouge_samples": "0",
                         "knowledge_check": "False", "validation_split_ratio": "0.2"})
    resource_config(job)
    code, log = run_job(job, timeout=240)  # the waiting rank must not hang at the barrier
    assert code != 0
    first = job.failure_first_line()
    assert "no trainable token" in first and "rows.jsonl:16" in first, log[-3000:]


def test_a_malformed_row_found_by_the_reading_rank_fails_the_job_with_its_line(job, tiny):
    job.add_model(tiny("llama"))
    lines = ['{"prompt": "Color of fruit %d?", "completion": "Green."}' % i for i in range(9)]
    lines.insert(6, '{"prompt": "Color of the odd fruit?", "completion": ')
    (job.channel("train") / "rows.jsonl").write_text("\n".join(lines) + "\n")
    job.hyperparameters({"instruction_tuned": "True", "max_steps": "1", "rouge_samples": "0",
                         "knowledge_check": "False"})
    resource_config(job)
    code, log = run_job(job, timeout=240)  # the waiting rank must not wait forever for the rows
    assert code != 0
    first = job.failure_first_line()
    assert "rows.jsonl:7" in first, log[-3000:]
