"""SIGTERM (a spot interruption, StopTrainingJob) checkpoints a DreamBooth job; a rerun resumes it and
ends with the weights an uninterrupted run ends with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.diffusion.conftest import FAST, dreambooth_job

STEPS = {**FAST, "max_steps": "24", "checkpoint_steps": "0", "num_report_images": "0"}


def _train(base, *, stop_after: str | None = None) -> tuple[int, str]:
    """`tuneforge train` in a subprocess; SIGTERM once a line containing `stop_after` is printed."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("SAGEMAKER_BASE_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "train", "--base-dir", str(base)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if stop_after and stop_after in line:
            process.send_signal(signal.SIGTERM)
            stop_after = None
    return process.wait(timeout=300), "".join(lines)


def _unet(job):
    from safetensors.torch import load_file

    return load_file(str(job.model_dir / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_rerun_resumes_to_the_same_weights(job, sd_base, tmp_path):
    from tests.conftest import Job

    reference = Job(tmp_path / "reference" / "opt" / "ml")
    dreambooth_job(reference, sd_base, STEPS)
    code, log = _train(reference.base)
    assert code == 0, log[-3000:]

    dreambooth_job(job, sd_base, STEPS)
    code, log = _train(job.base, stop_after="[metric] train_loss=")
    assert code != 0, log[-3000:]
    first = job.failure_first_line()
    assert first.startswith("stopped by SIGTERM at step ") and "rerun to resume" in first, first
    assert not (job.model_dir / "model_index.json").exists()
    checkpoints = list((job.base / "checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and str(checkpoints[0]) in first

    code, log = _train(job.base)
    assert code == 0, log[-3000:]
    assert not job.failure.exists() and (job.base / "output" / "previous-failure.txt").exists()
    metrics = job.metrics()
    assert metrics["resumed_from"] == str(checkpoints[0]) and len(metrics["loss_history"]) < 24
    resumed, uninterrupted = _unet(job), _unet(reference)
    assert set(resumed) == set(uninterrupted)
    worst = max(float((resumed[k] - uninterrupted[k]).abs().max()) for k in uninterrupted)
    assert worst <= 1e-6, worst
