"""DreamBooth jobs through the real launcher: the loss falls, the pipeline saves and reloads, LoRA,
prior preservation, and the before/after report."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

from tests.diffusion.conftest import FAST, INSTANCE_PROMPT, dreambooth_job, subject_images


def _reloaded(model_dir):
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True, use_safetensors=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _image(pipeline, seed=0, steps=2):
    generator = torch.Generator().manual_seed(seed)
    return np.asarray(pipeline(INSTANCE_PROMPT, height=64, width=64, num_inference_steps=steps, generator=generator,
                               output_type="pil").images[0])


def _same_picture(a, b) -> bool:
    """Equal up to a rounding step: the job draws with the modules it trained, the test with ones
    read back from disk, and float sums may round a pixel the other way."""
    return int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(next(folder.glob("*.safetensors"))))


@pytest.mark.slow
def test_full_unet_job_learns_and_writes_a_pipeline_that_reloads(trained_job, sd_base):
    from PIL import Image

    metrics = trained_job.metrics()
    assert metrics["task"] == "text-to-image" and metrics["method"] == "full" and metrics["steps"] == 12
    # the same fixed-noise denoising loss on the five images, before and after
    assert metrics["final_loss"] < 0.8 * metrics["initial_loss"], metrics
    model = trained_job.model_dir
    assert {"model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler", "tuneforge.json"} <= \
        {p.name for p in model.iterdir()}
    assert not list(model.rglob("*.bin")) and not list(model.rglob("checkpoint-*"))
    assert json.loads((model / "tuneforge.json").read_text())["task"] == "text-to-image"
    # the reloaded pipeline draws exactly the "after" image the job drew in memory (same seed)
    out = trained_job.base / "output" / "data"
    after = np.asarray(Image.open(out / metrics["images"]["after"][0]))
    before = np.asarray(Image.open(out / metrics["images"]["before"][0]))
    reloaded = _reloaded(model)
    assert _same_picture(_image(reloaded), after)
    assert np.array_equal(_image(reloaded), _image(reloaded))  # same seed, same image
    assert not np.array_equal(before, after)
    assert _same_picture(_image(_reloaded(sd_base)), before)
    _check_grid(out / "image_grid.png", before, after)
    assert "![the instance prompt drawn before and after fine-tuning](image_grid.png)" in (out / "report.md").read_text()
    grid_png = base64.b64encode((out / "image_grid.png").read_bytes()).decode("ascii")
    assert f'id="image-grid" alt="the instance prompt drawn before and after fine-tuning" src="data:image/png;base64,' \
        f'{grid_png}"' in (out / "report.html").read_text()


def _check_grid(path, before, after):
    """The 64-px pictures are enlarged 4x (pixels repeated) to 256-px tiles beside their labels, so
    the grid reads at a glance; each tile is its picture."""
    from PIL import Image

    from tuneforge.diffusion.images import GRID_FONT, GRID_GAP, GRID_LABEL_WIDTH

    top = 2 * GRID_FONT + GRID_GAP
    with Image.open(path) as grid:
        assert grid.size == (GRID_LABEL_WIDTH + 2 * (256 + GRID_GAP), top + 2 * (256 + GRID_GAP))
        for row, picture in enumerate((before, after)):
            tile = grid.convert("RGB").crop((GRID_LABEL_WIDTH, top + row * (256 + GRID_GAP),
                                             GRID_LABEL_WIDTH + 256, top + row * (256 + GRID_GAP) + 256))
            assert np.array_equal(np.asarray(tile)[::4, ::4], picture)
        labels = np.asarray(grid.convert("L").crop((0, top, GRID_LABEL_WIDTH, grid.height)))
        assert (labels < 128).sum() > 300  # the row names are drawn, in a font larger than PIL's 10-px default


@pytest.mark.slow
def test_lora_text_encoder_and_prior_preservation(job, sd_base, capfd):
    hyperparameters = {**FAST, "peft_type": "lora", "train_text_encoder": "True", "learning_rate": "0.01",
                       "lora_r": "8", "lora_alpha": "8", "with_prior_preservation": "True", "num_class_images": "4",
                       "sample_batch_size": "2", "max_steps": "12", "num_report_images": "0"}
    dreambooth_job(job, sd_base, hyperparameters)
    channel = job.channel("training")
    subject_images(channel / "class_data_dir", count=1, seed=5)
    given = sorted(p.relative_to(channel) for p in channel.rglob("*"))
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    log = "".join(capfd.readouterr())
    last = [line for line in log.splitlines() if line.startswith("[metric] train_loss=")][-1]
    assert last.split(" step=")[1].split()[0] == "12"
    assert 0 < float(last.split(" epoch=")[1].split()[0]) and "." in last.split(" epoch=")[1]  # epochs done, as the LLM log
    assert log.count("pipeline written to") == 1
    metrics = job.metrics()
    assert (metrics["method"], metrics["class_images"], metrics["class_images_generated"]) == ("lora", 4, 3)
    assert metrics["final_loss"] < metrics["initial_loss"], metrics
    # missing class images are made outside the input channel, which is left as it was
    assert sorted(p.relative_to(channel) for p in channel.rglob("*")) == given
    assert len(list((job.base / "checkpoints" / "class-images").glob("class-*.png"))) == 3
    # LoRA is merged: plain weights, changed from the base, in both trained parts
    for part in ("unet", "text_encoder"):
        trained, base = _weights(job.model_dir / part), _weights(sd_base / part)
        assert set(trained) == set(base) and not any("lora" in key for key in trained)
        assert any(not torch.equal(trained[key], base[key]) for key in base), part
    assert "images" not in metrics and not (job.base / "output" / "data" / "image_grid.png").exists()
    # the report's data section: both prompts and where the class images came from
    markdown = (job.base / "output" / "data" / "report.md").read_text()
    for row in ("| class prompt | a photo of a dog |", "| class images | 4 |", "| of them given in class_data_dir/ | 1 |",
                "| of them generated by the base model | 3 |", "| prior preservation | yes |"):
        assert row in markdown, row
    assert metrics["train_images"] == 2 * 12  # each step: one instance and one class picture
    assert "Images before and after" not in markdown
