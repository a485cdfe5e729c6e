"""An MLflow run through MlflowClient: hyperparameters as params, metrics per logging step, the
final metrics, and the report files as artifacts.

Requests are bounded before mlflow reads its settings (unless the environment sets them): one
retry, a 10 s timeout, so an unreachable server costs seconds, once. A `file:` store needs
MLFLOW_ALLOW_FILE_STORE since MLflow 3 (the URI asks for one, so it is allowed here).
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

# MLflow's own defaults (7 retries, backoff factor 2, 120 s timeout) would hold a job for minutes
BOUNDED_REQUESTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
BATCH = 100  # MLflow takes at most 100 params per log_batch call
LONGEST_PARAM = 6000  # characters MLflow keeps of a param value


class MlflowSink:
    def __init__(self, uri: str, experiment: str, run_name: str | None, params: dict, tags: dict):
        for name, value in BOUNDED_REQUESTS.items():
            os.environ.setdefault(name, value)
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if uri.startswith("arn:") and importlib.util.find_spec("sagemaker_mlflow") is None:
            raise RuntimeError("a SageMaker MLflow ARN needs the sagemaker-mlflow plugin, which is not installed "
                               "(add `pip install sagemaker-mlflow` to the image)")
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        self.where = f"MLflow ({uri})"
        self.Metric = Metric
        self.client = MlflowClient(tracking_uri=uri)
        experiment_id = self._experiment(experiment)
        tags = {k: str(v) for k, v in tags.items() if v}
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        params = [Param(k, str(v)[:LONGEST_PARAM]) for k, v in sorted(params.items())]
        for start in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + BATCH])

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # another job created it just now
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def scalars(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self.Metric(k, v, now, step) for k, v in values.items()])

    def finish(self, final: dict[str, float], step: int, files: list[Path], status: str) -> None:
        try:
            if final:
                self.scalars(final, step)
            for path in files:
                self.client.log_artifact(self.run_id, str(path))
        finally:
            self.client.set_terminated(self.run_id, status=status)
