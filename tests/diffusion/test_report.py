"""The text-to-image job's report, from a real tiny DreamBooth job (tests/diffusion/conftest.py
trained_job: 12 steps over 5 pictures): epochs, the loss curve of every step, the data, the grid,
images per second, the same values in report.html and report.md as in metrics.json."""

from __future__ import annotations

import re

import pytest

from tests.diffusion.conftest import INSTANCE_PROMPT


def _values(page: str) -> dict[str, float]:
    """Every number the page shows with its metrics.json key (data-key, data-value)."""
    return {key: float(value) for key, value in re.findall(r'data-key="([^"]+)" data-value="([^"]+)"', page)}


def _sections(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


@pytest.mark.slow
def test_the_report_of_a_real_job_has_the_language_model_pages_depth(trained_job):
    out = trained_job.base / "output" / "data"
    metrics, page, markdown = trained_job.metrics(), (out / "report.html").read_text(), (out / "report.md").read_text()
    assert _sections(page) == ["Status", "Images before and after", "Before and after fine-tuning", "Training curves",
                               "What was trained", "Data", "Speed, memory and time per phase", "Hyperparameters"]
    # epochs: 12 steps of batch 1 over 5 pictures
    assert metrics["epochs"] == 2.4 and "Succeeded: 12 steps, 2.40 epochs" in page and "- epochs" not in markdown
    # the loss of every step, drawn
    assert [step for step, _ in metrics["loss_history"]] == list(range(1, 13))
    assert 'id="chart-loss"' in page and "the loss of each of the 12 optimizer steps" in page
    # the data
    shown = _values(page)
    assert shown["data.instance_images"] == 5 and shown["data.resolution"] == 64
    assert f"| instance prompt | {INSTANCE_PROMPT} |" in markdown and "| prior preservation | no |" in markdown
    assert "class prompt" not in markdown  # no prior preservation: no class images to describe
    # before/after numbers and speed, as metrics.json holds them
    for key in ("initial_loss", "final_loss", "train_loss", "steps", "epochs", "train_images", "train_images_per_second",
                "train_runtime_s"):
        assert shown[key] == pytest.approx(metrics[key]), key
    assert metrics["train_images"] == 12 and metrics["train_images_per_second"] > 0
    assert f"| images per second | {metrics['train_images_per_second']:.2f} | images/s |" in markdown
    assert "training" in metrics["phases"] and "| training |" in markdown
    # what was trained
    assert metrics["job"]["method"] == "DreamBooth, full fine-tuning of the UNet" and "UNet2DConditionModel" in page
    assert f"| trainable | {metrics['parameters']['trainable']:,} (" in markdown
    # the grid: embedded in the page, shown by report.md from its file beside it, with what it shows
    assert "![the instance prompt drawn before and after fine-tuning](image_grid.png)" in markdown
    assert f'prompt "{INSTANCE_PROMPT}"; seed 0; top row: the base model, bottom row: the fine-tuned model' in markdown
    assert (out / "image_grid.png").is_file()


def test_images_trained_counts_the_short_last_batch_and_the_class_pictures():
    from types import SimpleNamespace

    from tuneforge.diffusion.facts import epochs_done, examples_per_step, images_trained

    assert examples_per_step(5, 2, 1) == [2, 2, 1] and examples_per_step(5, 2, 2) == [4, 1]
    config = SimpleNamespace(batch_size=2, gradient_accumulation_steps=1)
    assert images_trained([1, 2, 3, 4], 5, config, prior=False) == 2 + 2 + 1 + 2  # step 4 starts epoch 2
    assert images_trained([3, 4], 5, config, prior=True) == 2 * (1 + 2)  # a resumed run counts its own steps
    assert epochs_done(12, 5) == 2.4
