"""The `tuneforge` commands run as a user runs them: `check-job` runs the job's own checks without a model
(the job's own first failure line), `tiny-model` prints its folder and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import Job


def _check(job: Job) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", "check-job", "--base-dir", str(job.base)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def ready(tmp_path) -> Job:
    job = Job(tmp_path / "opt" / "ml")
    job.add_sample_data("instruction", n_train=8, n_val=2)
    job.hyperparameters({"instruction_tuned": "True", "epoch": "1"})
    return job


def test_a_sound_job_passes(ready):
    done = _check(ready)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("change,first", [
    (lambda job: job.hyperparameters({"instruction_tuned": "True", "learning_rate": "0"}),
     "HyperparameterError: hyperparameter learning_rate"),
    (lambda job: job.hyperparameters({"instruction_tuned": "True", "lerning_rate": "0.1"}),
     "HyperparameterError: "),
    (lambda job: (job.channel("train") / "extra.jsonl").write_text('{"prompt": ["a"], "completion": "b"}\n'),
     "DataError: "),
    (lambda job: (job.channel("evaluation") / "t.jsonl").write_text('{"prompt": "q"}\n'),
     "DataError: "),
])
def test_a_bad_input_fails_with_the_jobs_own_first_line(ready, change, first):
    change(ready)
    done = _check(ready)
    assert done.returncode == 1
    assert done.stderr.startswith(first), done.stderr
    assert ready.failure.read_text().splitlines()[0] == done.stderr.splitlines()[0]


@pytest.mark.parametrize("hyperparameters,channel,first", [
    ({"max_steps": "2"}, {}, None),
    ({"max_steps": "2", "compute_fid": "True"}, {}, "ModelError: "),  # the fid channel is missing
    ({"max_steps": "2", "learning_rate": "-1"}, {}, "HyperparameterError: hyperparameter learning_rate"),
    ({"max_steps": "2"}, {"count": 0}, "DataError: "),  # no instance images
])
def test_a_text_to_image_job_is_checked_as_its_job_checks_it(tmp_path, hyperparameters, channel, first):
    from tests.diffusion.conftest import dreambooth_channel

    job = Job(tmp_path / "opt" / "ml")
    (job.channel("model") / "model_index.json").write_text("{}")  # a pipeline folder: nothing is loaded
    dreambooth_channel(job.channel("training"), **channel)
    job.hyperparameters(hyperparameters)
    done = _check(job)
    if first is None:
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 1 and done.stderr.startswith(first), done.stderr
    assert job.failure.read_text().splitlines()[0] == done.stderr.splitlines()[0]


def test_tiny_model_prints_its_folder_and_no_library_noise(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tuneforge.cli", "tiny-model", "--family", "llama", "--output",
                           str(tmp_path / "tiny")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path / 'tiny'}\n" and done.stderr == ""
