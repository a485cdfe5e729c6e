"""Experiment trackers on real jobs (docs/trackers.md): a tiny job's scalars read back from its
TensorBoard event files and from its MLflow run (a local file store, and a real `mlflow server`
over HTTP with a sqlite store and proxied artifacts, through MlflowClient), each equal to the
job's own metric lines and metrics.json; an MLflow server that cannot be reached is a warning
naming it, and the job still succeeds."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.test_report_e2e import prepared

pytestmark = pytest.mark.slow

TRAIN_TAGS = {"train/loss", "train/learning_rate", "train/grad_norm", "train/epoch", "train/tokens_per_second"}
EVAL_TAGS = {"eval/loss", "eval/perplexity"}
FINAL_TAGS = {"final/train_loss", "final/eval_loss", "final/perplexity", "final/rougeL", "final/train_tokens_per_second",
              "base/eval_loss"}


def metric_lines(log: str, name: str) -> list[tuple[int, float]]:
    """(step, value) of each `[metric] name=value step=N` line the job printed."""
    return [(int(step), float(value)) for value, step in re.findall(rf"\[metric\] {name}=([0-9.]+) step=(\d+)", log)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on a free port: runs in sqlite, artifacts proxied to a folder."""
    port = closed_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen([str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                               "--artifacts-destination", str(tmp_path / "mlflow-artifacts")],
                              stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 120
        while not _answers(uri + "/health"):
            assert server.poll() is None and time.monotonic() < end, (tmp_path / "mlflow-server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.parametrize("store_kind", ["file store", "tracking server"])
def test_tensorboard_and_mlflow_get_the_jobs_numbers(store_kind, job, tiny, tmp_path, monkeypatch, request):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if store_kind == "file store":
        store = (tmp_path / "mlruns").as_uri()
    else:
        store = request.getfixturevalue("mlflow_server")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tracker-test")
    monkeypatch.setenv("TRAINING_JOB_NAME", "tiny-llama-job")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this test's own client
    result = prepared(job, tiny, tensorboard="True").run_cli()
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    metrics = job.metrics()
    train_lines, eval_lines = metric_lines(log, "train_loss"), metric_lines(log, "eval_perplexity")
    assert [step for step, _ in train_lines] == [1, 2, 4, 6, 8] and [s for s, _ in eval_lines] == [4, 8]
    eval_losses = [float(v) for v in re.findall(r"\[metric\] eval_loss=([0-9.]+) \[metric\] eval_perplexity", log)]

    events = EventAccumulator(str(job.base / "output" / "tensorboard"))
    events.Reload()
    board = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert TRAIN_TAGS | EVAL_TAGS | FINAL_TAGS <= set(board), sorted(board)
    check_curves(board, train_lines, eval_lines, eval_losses, metrics)
    assert board["final/train_loss"] == [(8, pytest.approx(metrics["train_loss"], rel=1e-6))]
    assert board["final/rougeL"] == [(8, pytest.approx(metrics["rougeL"], rel=1e-6))]

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("tracker-test")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny-llama-job" and run.info.status == "FINISHED"
    assert run.data.tags["sagemaker.training_job"] == "tiny-llama-job"
    hyperparameters = metrics["hyperparameters"]
    assert run.data.params["learning_rate"] == "0.003" and run.data.params["tensorboard"] == "True"
    assert len(run.data.params) > 60 and "epoch" in run.data.params, hyperparameters
    history = {name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
               for name in TRAIN_TAGS | EVAL_TAGS | FINAL_TAGS}
    check_curves(history, train_lines, eval_lines, eval_losses, metrics)
    assert run.data.metrics["final/eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-9)
    assert run.data.metrics["final/perplexity"] == pytest.approx(metrics["perplexity"], rel=1e-9)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "report.html", "report.md", "log_history.json"} <= artifacts, artifacts
    copy = client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))
    assert json.loads(open(copy).read()) == metrics


def check_curves(curves: dict, train_lines, eval_lines, eval_losses, metrics) -> None:
    """A tracker's curves equal the job's metric lines (6 decimals) and metrics.json."""
    assert [s for s, _ in curves["train/loss"]] == [s for s, _ in train_lines]
    assert [v for _, v in curves["train/loss"]] == pytest.approx([v for _, v in train_lines], abs=2e-6)
    assert [s for s, _ in curves["train/learning_rate"]] == [s for s, _ in train_lines]
    assert all(v > 0 for _, v in curves["train/tokens_per_second"])
    # the baseline evaluation at step 0, then one per epoch (the final one is final/eval_loss)
    assert [s for s, _ in curves["eval/loss"]] == [0] + [s for s, _ in eval_lines]
    assert curves["eval/loss"][0][1] == pytest.approx(metrics["eval_loss_before"], rel=1e-6)
    assert [v for _, v in curves["eval/loss"][1:]] == pytest.approx(eval_losses, abs=2e-6)
    assert [v for _, v in curves["eval/perplexity"][1:]] == pytest.approx([v for _, v in eval_lines], rel=1e-5)


def test_an_unreachable_mlflow_server_is_a_warning_and_the_job_succeeds(job, tiny, monkeypatch):
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = prepared(job, tiny, epoch="1", rouge_samples="0").run_cli()
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert (job.model_dir / "tuneforge.json").is_file() and job.metrics()["steps"] == 4
    [connecting] = [line for line in log.splitlines() if f"MLflow: connecting to {uri}" in line]
    [warning] = [line for line in log.splitlines() if f"MLflow at {uri} is not used" in line]
    assert "Connection refused" in warning and warning.endswith("the job goes on without it"), warning
    assert "Traceback" not in log
    # the whole cost, importing mlflow included, from the two lines' timestamps
    assert logged_at(warning) - logged_at(connecting) < 8


def logged_at(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_a_failed_job_is_a_failed_mlflow_run_with_what_it_got_to(job, tiny, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    prepared(job, tiny, epoch="1")
    with open(job.base / "input" / "data" / "train" / "data.jsonl", "a") as handle:
        handle.write("{broken\n")
    result = job.run_cli()
    assert result.returncode == 1 and "malformed JSON" in job.failure_first_line()
    client = MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("tuneforge").experiment_id])
    assert run.info.status == "FAILED" and run.data.params["epoch"] == "1"
    assert "metrics.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
