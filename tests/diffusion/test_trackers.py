"""A text-to-image job's loss and learning rate in TensorBoard (asked for by the folder SageMaker's
TensorBoardOutputConfig creates, not the hyperparameter) and in MLflow (a local file store), equal
to its metrics.json loss history; its final numbers and report files reach both."""

from __future__ import annotations

import os

import pytest

from tests.diffusion.conftest import FAST, dreambooth_job


def test_dreambooth_loss_and_learning_rate_go_to_tensorboard_and_mlflow(job, sd_base, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_RUN_NAME", "dreambooth-run")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    dreambooth_job(job, sd_base, {**FAST, "max_steps": "6", "num_report_images": "0"})
    board = job.base / "output" / "tensorboard"
    board.mkdir(parents=True)
    try:
        assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    finally:
        os.environ.pop("SAGEMAKER_BASE_DIR", None)
    history = [tuple(point) for point in job.metrics()["loss_history"]]
    assert [step for step, _ in history] == [1, 2, 3, 4, 5, 6]

    events = EventAccumulator(str(board))
    events.Reload()
    metrics = job.metrics()
    finals = {"final/initial_loss", "final/final_loss", "final/train_loss", "final/train_images_per_second",
              "final/train_runtime_s"}
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/learning_rate"} | finals
    assert [(e.step, e.value) for e in events.Scalars("final/final_loss")] == [(6, pytest.approx(metrics["final_loss"]))]
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in losses] == [s for s, _ in history]
    assert [v for _, v in losses] == pytest.approx([v for _, v in history], rel=1e-6)
    assert [e.value for e in events.Scalars("train/learning_rate")] == pytest.approx([0.001] * 6)

    client = MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("tuneforge").experiment_id])
    assert run.info.run_name == "dreambooth-run" and run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.001" and run.data.tags["tuneforge.task"] == "text-to-image"
    mlflow_losses = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert mlflow_losses == history
    assert run.data.metrics["final/final_loss"] == pytest.approx(metrics["final_loss"], rel=1e-9)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "report.html", "report.md"} <= artifacts, artifacts
