"""The trackers' edges, with the real MLflow client and real sockets: a server that refuses or
never answers costs seconds, once; a missing mlflow package is a warning; only rank 0 writes;
the scalars a Trainer log becomes."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import pytest

from tuneforge.contract import Paths
from tuneforge.llm.metrics import tracker_finals, tracker_scalars
from tuneforge.trackers import open_trackers


def open_mlflow(monkeypatch, tmp_path, uri: str):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(name, raising=False)  # the trackers' bounds, not the environment's, are tested
    started = time.monotonic()
    trackers = open_trackers(Paths(tmp_path), {"epoch": 1}, tensorboard=False, task="text-generation")
    return trackers, time.monotonic() - started


def test_a_refused_connection_costs_seconds_and_is_a_warning(monkeypatch, tmp_path, caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with caplog.at_level(logging.WARNING, logger="tuneforge.trackers"):
        trackers, took = open_mlflow(monkeypatch, tmp_path, uri)
    assert not trackers.active and took < 8, took  # importing mlflow included
    assert f"MLflow at {uri} is not used" in caplog.text and "the job goes on without it" in caplog.text


def test_a_server_that_never_answers_costs_one_bounded_wait(monkeypatch, tmp_path, caplog):
    with socket.socket() as server:  # accepts connections (the kernel's backlog) and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        with caplog.at_level(logging.WARNING, logger="tuneforge.trackers"):
            trackers, took = open_mlflow(monkeypatch, tmp_path, uri)
    assert not trackers.active and 4 < took < 15, took  # 5 s timeout, one retry
    assert f"MLflow at {uri} is not used" in caplog.text


def test_mlflow_missing_is_a_warning():
    code = ("import sys, logging; sys.modules['mlflow'] = None; logging.basicConfig();"
            "from tuneforge.contract import Paths; from tuneforge.trackers import open_trackers;"
            "t = open_trackers(Paths.from_env('/nonexistent'), {}, tensorboard=False, task='x'); print('active', t.active)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "MLFLOW_TRACKING_URI": "http://example.invalid"})
    assert result.returncode == 0, result.stderr
    assert "active False" in result.stdout
    assert "MLflow at http://example.invalid is not used: mlflow is not installed" in result.stderr


def test_only_rank_zero_writes(monkeypatch, tmp_path):
    (tmp_path / "output" / "tensorboard").mkdir(parents=True)
    monkeypatch.setenv("RANK", "1")
    assert not open_trackers(Paths(tmp_path), {}, tensorboard=True, task="x").active
    monkeypatch.setenv("RANK", "0")
    trackers = open_trackers(Paths(tmp_path), {}, tensorboard=False, task="x")  # the folder alone asks for it
    assert trackers.active
    trackers.finish({}, [], "FINISHED")
    assert list((tmp_path / "output" / "tensorboard").glob("events.out.tfevents.*"))


def test_trainer_logs_become_tracker_scalars():
    step = {"loss": 1.25, "grad_norm": 0.5, "learning_rate": 1e-4, "epoch": 0.5, "num_input_tokens_seen": 100}
    assert tracker_scalars(step, 2000.0) == {"train/loss": 1.25, "train/grad_norm": 0.5, "train/learning_rate": 1e-4,
                                             "train/epoch": 0.5, "train/tokens_per_second": 2000.0}
    evaluation = tracker_scalars({"eval_loss": 2.0, "eval_runtime": 0.1})
    assert evaluation == {"eval/loss": 2.0, "eval/perplexity": pytest.approx(7.389056)}
    assert tracker_scalars({"eval_before_loss": 0.0}) == {"eval/loss": 0.0, "eval/perplexity": 1.0}
    results = {"train_loss": 0.5, "eval_loss_before": 3.0, "rougeL": 0.25, "steps": 8, "epochs": 2.0,
               "evaluation": {"tickets": {"before": {"score": 0.1}, "after": {"score": 0.9}}},
               "general_knowledge": {"after": {"score": 0.75}}, "mfu": None}
    assert tracker_finals(results) == {"final/train_loss": 0.5, "base/eval_loss": 3.0, "final/rougeL": 0.25,
                                       "final/steps": 8, "base/eval_tickets": 0.1, "final/eval_tickets": 0.9,
                                       "final/general_knowledge": 0.75}


def test_a_sagemaker_mlflow_arn_without_its_plugin_is_a_warning_that_says_so(monkeypatch, tmp_path, caplog):
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team"
    with caplog.at_level(logging.WARNING, logger="tuneforge.trackers"):
        trackers, _ = open_mlflow(monkeypatch, tmp_path, arn)
    assert not trackers.active
    assert f"MLflow at {arn} is not used" in caplog.text and "needs the sagemaker-mlflow plugin" in caplog.text
