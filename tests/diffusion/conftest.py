"""Text-to-image fixtures: the tiny random pipeline, DreamBooth-shaped channels, one-thread torch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

INSTANCE_PROMPT = "a photo of a doppler dog"
CLASS_PROMPT = "a photo of a dog"
# learns fast on the tiny pipeline; real runs keep JumpStart's 2e-6
FAST = {"learning_rate": "0.001", "num_inference_steps": "2", "num_report_images": "2"}


@pytest.fixture(scope="session")
def sd_base() -> Path:
    from tuneforge.diffusion.tiny import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture(autouse=True)
def one_thread():
    """Several test processes share two cores: one torch thread each is ~10x faster than two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def subject_images(folder: Path, count: int = 5, size: int = 64, seed: int = 0) -> list[Path]:
    """`count` pictures of one 'subject': a red disc on a blue ground, moved a little each time."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size]
    paths = []
    for index in range(count):
        cx, cy = size // 2 + rng.integers(-6, 7), size // 2 + rng.integers(-6, 7)
        pixels = np.zeros((size, size, 3), np.uint8)
        pixels[..., 2] = 200
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < (size // 4) ** 2] = [220, 30, 30]
        path = folder / f"subject-{index}.{'png' if index % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def dreambooth_channel(folder: Path, *, count: int = 5, info: dict | None = None) -> Path:
    subject_images(folder, count)
    info = {"instance_prompt": INSTANCE_PROMPT, "class_prompt": CLASS_PROMPT} if info is None else info
    (folder / "dataset_info.json").write_text(json.dumps(info))
    return folder


def dreambooth_job(job, sd_base: Path, hyperparameters: dict, **channel) -> None:
    """A job tree: the tiny pipeline in the model channel, five subject images in `training`."""
    job.add_model(sd_base)
    dreambooth_channel(job.channel("training"), **channel)
    job.hyperparameters(hyperparameters)


@pytest.fixture(scope="session")
def trained_job(tmp_path_factory, sd_base):
    """A finished DreamBooth job (full UNet, a few steps): its /opt/ml tree."""
    from tests.conftest import Job

    job = Job(tmp_path_factory.mktemp("dreambooth") / "opt" / "ml")
    dreambooth_job(job, sd_base, {**FAST, "max_steps": "12"})
    import torch

    torch.set_num_threads(1)
    try:
        assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    finally:
        os.environ.pop("SAGEMAKER_BASE_DIR", None)  # run() sets it for its children
    return job
