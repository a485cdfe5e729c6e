"""The run report and the log of real jobs on a tiny model: every job writes report.html (also when
it fails), `tuneforge report` rebuilds and compares, and the log reads as a story."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import Job
from tests.unit.test_report import check_numbers_match, check_self_contained, parse_page, png_has_drawing
from tuneforge.contract import SFT_METRIC_DEFINITIONS

pytestmark = pytest.mark.slow

QUICK = {"instruction_tuned": "True", "peft_type": "none", "epoch": "2", "learning_rate": "0.003",
         "per_device_train_batch_size": "8", "per_device_eval_batch_size": "8", "logging_steps": "2",
         "rouge_samples": "4", "max_output_length": "8", "knowledge_check": "False"}
NOISE = ("gemm_4bit_forward", "Setting accelerator to CPU", "early stopping required metric_for_best_model",
         "Using default tokenizer", "{'loss'", "{'eval_loss'", "'train_runtime'")


def prepared(job: Job, tiny, **hyperparameters) -> Job:
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=32, n_val=8)
    job.hyperparameters({**QUICK, **hyperparameters})
    return job


def tuneforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", *args], capture_output=True, text=True, timeout=300)


def test_a_job_writes_its_report_and_a_log_that_reads_as_a_story(job, tiny):
    result = prepared(job, tiny).run_cli()
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    data = job.base / "output" / "data"
    metrics = job.metrics()

    html = (data / "report.html").read_text()
    page = check_self_contained(html)
    for name in ("chart-loss", "chart-lr"):
        png_has_drawing(page.images[name])
    assert check_numbers_match(page, metrics) >= 20
    keys = {key for key, _, _ in page.numbers}
    assert {"eval_loss_before", "eval_loss", "rougeL", "train_tokens_per_second", "phases.training"} <= keys
    assert "LlamaForCausalLM" in html and "full fine-tuning" in html and "<mark>" in html
    md = (data / "report.md").read_text()
    assert f"| validation loss | {metrics['eval_loss_before']:.4f} | {metrics['eval_loss']:.4f} |" in md

    # the story: phases with durations, one progress line per logging step with ETA, no noise
    for phase in ("loading data", "tokenizing 40 rows", "loading model", "baseline evaluation", "training",
                  "final evaluation", "saving"):
        assert re.search(rf"{phase}: done in [\d.]+ s", log), phase
    progress = re.findall(r"^step (\d+)/8 \(\d+%\) epoch [\d.]+ \| loss [\d.]+ \| lr \S+ \| [\d,]+ tokens/s "
                          r"\| ETA \d+:\d\d:\d\d \[metric\] train_loss=[\d.]+", log, re.M)
    history = json.loads((data / "log_history.json").read_text())
    assert [int(s) for s in progress] == [e["step"] for e in history if "loss" in e] == [1, 2, 4, 6, 8]
    assert log.count("[metric] train_loss=") == len(progress)  # no duplicated metric lines
    assert len(re.findall(r"^evaluation at step \d/8: loss", log, re.M)) == 2  # once per epoch
    assert re.search(r"^baseline evaluation \(before training\): loss [\d.]+", log, re.M)
    assert re.search(r"^final evaluation \(the model that is saved\): loss [\d.]+", log, re.M)
    assert f"run report: {data / 'report.html'}" in log
    for noise in NOISE:
        assert noise not in log, noise
    for definition in SFT_METRIC_DEFINITIONS:  # an SFT job: SageMaker's metric definitions still read the log
        if "rouge" not in definition["Regex"] and "exact_match" not in definition["Regex"]:
            assert re.findall(definition["Regex"], log), definition
    assert re.findall(r"\[metric\] final_rougeL=([0-9.]+)", log)


def test_compare_two_learning_rates_and_rebuild_from_an_archive(tmp_path, tiny):
    jobs = {}
    for lr in ("0.003", "0.0001"):
        job = prepared(Job(tmp_path / f"lr-{lr}" / "opt" / "ml"), tiny, learning_rate=lr)
        assert job.run_in_process() == 0
        jobs[lr] = job
    high, low = (jobs[lr].metrics() for lr in ("0.003", "0.0001"))
    assert high["eval_loss"] < low["eval_loss"] - 0.5  # the sweep made a difference worth comparing

    result = tuneforge("report", "--compare", str(jobs["0.003"].base), str(jobs["0.0001"].base),
                       "--out", str(tmp_path / "sweep"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [str(tmp_path / "sweep" / "compare.html"), str(tmp_path / "sweep" / "compare.md")]
    html = (tmp_path / "sweep" / "compare.html").read_text()
    page = check_self_contained(html)
    png_has_drawing(page.images["chart-compare"])
    assert "lr-0.003" in html and "lr-0.0001" in html
    loss_cells = [value for key, value, _ in page.numbers if key == "eval_loss"]
    assert loss_cells == [high["eval_loss"], low["eval_loss"]]
    md = (tmp_path / "sweep" / "compare.md").read_text()
    assert "| learning_rate | 0.003 | 0.0001 |" in md

    # the output.tar.gz SageMaker uploads (output/data's files) rebuilds the same report
    archive = tmp_path / "download" / "output.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for path in (jobs["0.003"].base / "output" / "data").iterdir():
            if not path.name.startswith("report"):
                tar.add(path, arcname=path.name)
    result = tuneforge("report", str(archive))
    assert result.returncode == 0, result.stderr[-2000:]
    rebuilt = parse_page((tmp_path / "download" / "report.html").read_text())
    check_numbers_match(rebuilt, high)
    assert len(rebuilt.numbers) == len(parse_page((jobs["0.003"].base / "output" / "data" / "report.html")
                                                  .read_text()).numbers)


def test_a_failed_job_writes_its_report_as_far_as_it_got(job, tiny):
    prepared(job, tiny)
    (job.base / "input" / "data" / "validation" / "broken.jsonl").write_text('{"prompt": "no completion"}\n')
    assert job.run_in_process() == 1
    html = (job.base / "output" / "data" / "report.html").read_text()
    first = job.failure_first_line()
    assert f"Failed: {first}" in html.replace("&#x27;", "'").replace("&quot;", '"')
    assert "Hyperparameters" in html and "learning_rate" in html
    check_self_contained(html)


def test_a_report_that_cannot_be_written_does_not_fail_the_job(job, tiny):
    prepared(job, tiny, max_steps="2", rouge_samples="0")
    (job.base / "output" / "data" / "report.html").mkdir(parents=True)  # the page cannot be written there
    result = job.run_cli()
    assert result.returncode == 0, result.stderr[-2000:]
    assert "writing the run report failed (the job's result is unaffected)" in result.stderr
    assert (job.model_dir / "model.safetensors").exists() and not job.failure.exists()
