"""The DreamBooth channel is read as JumpStart lays it out, and each bad input fails clearly."""

import json

import pytest

from tests.diffusion.conftest import CLASS_PROMPT, INSTANCE_PROMPT, dreambooth_channel, dreambooth_job, subject_images
from tuneforge.diffusion.data import read_channel
from tuneforge.errors import DataError


def test_reads_images_prompts_and_class_images(tmp_path):
    channel = dreambooth_channel(tmp_path / "training")
    subject_images(channel / "class_data_dir", count=3, seed=1)
    (channel / "notes.txt").write_text("not an image")
    data = read_channel(channel, with_prior_preservation=True)
    assert (data.instance_prompt, data.class_prompt) == (INSTANCE_PROMPT, CLASS_PROMPT)
    assert len(data.instance_images) == 5 and len(data.class_images) == 3
    assert {image.mode for image in data.instance_images} == {"RGB"}
    # without prior preservation the class images are not read
    assert read_channel(channel, with_prior_preservation=False).class_images == []


def _error(channel, prior=False) -> str:
    with pytest.raises(DataError) as caught:
        read_channel(channel, with_prior_preservation=prior)
    return str(caught.value)


def test_no_images(tmp_path):
    channel = tmp_path / "training"
    channel.mkdir()
    (channel / "dataset_info.json").write_text(json.dumps({"instance_prompt": INSTANCE_PROMPT}))
    (channel / "dog.gif").write_bytes(b"GIF89a")
    message = _error(channel)
    assert "no instance images" in message and "dog.gif" in message and ".png, .jpg or .jpeg" in message


def test_unreadable_image(tmp_path):
    channel = dreambooth_channel(tmp_path / "training")
    (channel / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    message = _error(channel)
    assert message.startswith(f"{channel / 'broken.jpg'}: the image cannot be read") and "replace it" in message


def test_missing_instance_prompt(tmp_path):
    channel = dreambooth_channel(tmp_path / "training", info={"class_prompt": CLASS_PROMPT})
    message = _error(channel)
    assert "dataset_info.json field instance_prompt" in message and "is missing" in message


@pytest.mark.parametrize("text, expected", [
    ('{"instance_prompt": ', "not valid JSON (line 1"),
    ('["a photo"]', "must be a JSON object"),
    ('{"instance_prompt": ""}', "not a non-empty string"),
])
def test_malformed_dataset_info(tmp_path, text, expected):
    channel = dreambooth_channel(tmp_path / "training")
    (channel / "dataset_info.json").write_text(text)
    assert expected in _error(channel)


def test_missing_dataset_info_and_class_prompt(tmp_path):
    channel = dreambooth_channel(tmp_path / "training")
    (channel / "dataset_info.json").unlink()
    assert "dataset_info.json is missing" in _error(channel)
    (channel / "dataset_info.json").write_text(json.dumps({"instance_prompt": INSTANCE_PROMPT}))
    message = _error(channel, prior=True)
    assert "class_prompt" in message and "with_prior_preservation" in message


@pytest.mark.parametrize("case, first_line", [
    ("no images", "DataError: {channel}: no instance images"),
    ("unreadable image", "DataError: {channel}/subject-0.jpg: the image cannot be read"),
    ("no instance_prompt", "DataError: {channel}/dataset_info.json field instance_prompt: `instance_prompt` is missing"),
    ("width not a multiple of 8", "HyperparameterError: hyperparameter resolution: 100 is not a multiple of 8"),
])
def test_bad_jobs_fail_with_a_clear_failure_file(job, sd_base, case, first_line):
    hyperparameters = {"resolution": "100"} if case == "width not a multiple of 8" else {}
    info = {"class_prompt": CLASS_PROMPT} if case == "no instance_prompt" else None
    dreambooth_job(job, sd_base, hyperparameters, info=info)
    channel = job.channel("training")
    if case == "no images":
        for image in [*channel.glob("*.png"), *channel.glob("*.jpg")]:
            image.unlink()
    if case == "unreadable image":
        (channel / "subject-0.jpg").write_bytes(b"not a jpeg at all")
    assert job.run_in_process() == 1
    assert job.failure_first_line().startswith(first_line.format(channel=channel))
    assert not (job.model_dir / "model_index.json").exists()
