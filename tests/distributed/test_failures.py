"""A failing rank fails the job: one failure file naming that rank, a non-zero exit, every rank
torn down, no model written."""

import os

import pytest

from .conftest import FAULTS, run_job

QUICK = {"instruction_tuned": "True", "max_steps": "4", "rouge_samples": "0", "per_device_train_batch_size": "4"}


def _fault_env(kind: str) -> dict:
    path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "TUNEFORGE_TEST_FAULT": kind, "TUNEFORGE_TEST_FAULT_RANK": "1"}


def _failure_files(job) -> list:
    return [p for p in job.base.rglob("*") if p.name == "failure"]


@pytest.mark.slow
def test_python_error_on_rank_1_gives_one_failure_file_naming_it(small_job):
    job = small_job
    job.hyperparameters(QUICK)
    code, log = run_job(job, **_fault_env("raise"))
    assert code == 1, log[-3000:]
    assert _failure_files(job) == [job.failure]
    text = job.failure.read_text()
    assert job.failure_first_line() == "RuntimeError: injected failure (rank 1)"
    assert "Traceback" in text and "_faulty_train" in text
    assert list(job.model_dir.iterdir()) == []
    assert "injected failure" in log  # the traceback reached the log too


@pytest.mark.slow
def test_rank_killed_by_a_signal_is_named_with_the_signal(small_job):
    job = small_job
    job.hyperparameters(QUICK)
    code, log = run_job(job, **_fault_env("kill"))
    assert code == 1, log[-3000:]
    assert _failure_files(job) == [job.failure]
    first = job.failure_first_line()
    assert first.startswith("rank 1 was killed by signal SIGKILL (9)"), first
    assert "out-of-memory" in first and "Fix:" in first
    assert list(job.model_dir.iterdir()) == []
