"""Experiment trackers a job's numbers go to besides its own report (docs/trackers.md):
TensorBoard event files in output/tensorboard (what SageMaker's TensorBoardOutputConfig syncs),
and an MLflow run where MLFLOW_TRACKING_URI is set (SageMaker's managed MLflow sets it).

Only rank 0 writes. A tracker that cannot be reached or written is a warning in the log, and it
is left alone for the rest of the job: a tracker never fails or holds up training.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..contract import Paths, train_env

log = logging.getLogger(__name__)


class JobTrackers:
    """The job's open trackers (sinks); each call goes to every one that still works."""

    def __init__(self, sinks: list):
        self.sinks = list(sinks)
        self.last_step = 0

    @property
    def active(self) -> bool:
        return bool(self.sinks)

    def scalars(self, values: dict, step: int) -> None:
        """Numbers at a training step, e.g. {"train/loss": 1.2, "train/learning_rate": 1e-4}."""
        values = finite_numbers(values)
        self.last_step = max(self.last_step, step)
        if values:
            self._each("scalars", values, step)

    def finish(self, final: dict, files: list[Path], status: str) -> None:
        """The final metrics (at the last step), the report files, and the run's end status
        (FINISHED, FAILED or KILLED); the trackers are closed after."""
        self._each("finish", finite_numbers(final), self.last_step, files, status)
        self.sinks = []

    def _each(self, method: str, *args) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args)
            except Exception as exc:  # a tracker never fails the job
                log.warning("%s: %s failed (%s: %s); nothing more is sent there for this job", sink.where, method,
                            type(exc).__name__, exc)
                self.sinks.remove(sink)


def finite_numbers(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def open_trackers(paths: Paths, hyperparameters: dict, *, tensorboard: bool, task: str) -> JobTrackers:
    """The trackers this job asked for, on rank 0: TensorBoard when `tensorboard` or when
    output/tensorboard exists, MLflow when MLFLOW_TRACKING_URI is set. None fails: one that
    cannot start is a warning."""
    environment = train_env()
    if environment.rank != 0:
        return JobTrackers([])
    sinks = []
    if tensorboard or paths.tensorboard_dir.is_dir():
        sinks.append(_started("TensorBoard", str(paths.tensorboard_dir), _tensorboard, paths.tensorboard_dir))
    if environment.mlflow_tracking_uri:
        uri = environment.mlflow_tracking_uri
        run_name = environment.mlflow_run_name or environment.job_name()
        log.info("MLflow: connecting to %s (experiment %s, run %s)", uri, environment.mlflow_experiment_name,
                 run_name or "named by MLflow")
        tags = {"tuneforge.task": task, "sagemaker.training_job": environment.job_name()}
        sinks.append(_started("MLflow", uri, _mlflow, uri, environment.mlflow_experiment_name, run_name,
                              hyperparameters, tags))
    return JobTrackers([sink for sink in sinks if sink is not None])


def _tensorboard(folder: Path):
    from .tensorboard_sink import TensorBoardSink

    return TensorBoardSink(folder)


def _mlflow(*args):
    from .mlflow_sink import MlflowSink

    return MlflowSink(*args)


def _started(kind: str, where: str, start: Callable, *args):
    try:
        sink = start(*args)
    except ImportError as exc:
        log.warning("%s at %s is not used: %s is not installed (%s); the job goes on without it", kind, where,
                    exc.name or "its package", exc)
        return None
    except Exception as exc:
        log.warning("%s at %s is not used: %s: %s; the job goes on without it", kind, where, type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")
        return None
    log.info("%s: the training metrics go to %s", kind, where)
    return sink


@contextmanager
def job_trackers(paths: Paths, config, *, task: str, final: Callable[[], dict] | None = None,
                 report: Path | None = None) -> Iterator[JobTrackers]:
    """Trackers open for the `with` block; at its end they get `final()` (the final metrics) and
    the files in `report` (output/data: metrics.json, report.html, report.md, ...), and the run
    ends FINISHED, KILLED (SIGTERM) or FAILED as the block did."""
    from ..job.stopping import Stopped

    trackers = open_trackers(paths, config.to_dict(), tensorboard=config.tensorboard, task=task)
    status = "FAILED"
    try:
        yield trackers
        status = "FINISHED"
    except (Stopped, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        if trackers.active:
            trackers.finish(_quietly(final), _report_files(report), status)


def _quietly(final: Callable[[], dict] | None) -> dict:
    try:
        return final() if final else {}
    except Exception as exc:
        log.warning("the final metrics could not be read for the trackers (%s)", exc)
        return {}


def _report_files(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
