"""metrics.json goes through its pydantic schema (tuneforge/metrics_file.py) unchanged, key for key."""

import json
import math
from pathlib import Path

import pytest

from tuneforge.metrics_file import MetricsFile, metrics_json, read_metrics

RESULTS = {"phases": {"loading data": 0.5}, "hyperparameters": {"values": {"epoch": 1}, "given": ["epoch"]},
           "parallelism": "none", "steps": 4, "epochs": 1.0, "train_loss": 2.5, "train_tokens": 120,
           "eval_loss_before": float("nan"), "resumed_from": None, "rouge1": 0.25, "evaluation_gate": {"passed": True},
           "a_new_key": [1, 2], "train_tokens_per_second": 10}


def test_written_key_for_key_as_recorded():
    written = json.loads(metrics_json(RESULTS))
    assert list(written) == list(RESULTS)
    assert written["train_tokens"] == 120 and isinstance(written["train_tokens_per_second"], int)
    assert math.isnan(written["eval_loss_before"]) and written["a_new_key"] == [1, 2]
    assert metrics_json(RESULTS) == json.dumps(RESULTS, indent=2, default=str) + "\n"


def test_a_wrong_type_is_refused_when_writing():
    with pytest.raises(ValueError):
        metrics_json({**RESULTS, "steps": "four"})


def test_read_back_by_attribute():
    recorded = read_metrics(json.loads(metrics_json(RESULTS)))
    assert recorded.steps == 4 and recorded.parallelism == "none" and recorded.a_new_key == [1, 2]
    assert recorded.eval_loss is None  # not recorded


def test_a_file_off_the_schema_is_still_read():
    recorded = read_metrics({"steps": "four", "task": "text-to-image"})
    assert recorded.steps == "four" and recorded.task == "text-to-image"
    assert isinstance(recorded, MetricsFile)


# what diffusion/train.py records (its keys and inner layouts, the numbers made up)
DIFFUSION = {"task": "text-to-image", "instance_images": 5, "class_images": 0, "class_images_generated": 0,
             "resolution": 64, "data": {"format": "DreamBooth images", "instance_prompt": "a sks dog",
                                        "instance_images": 5, "resolution": 64, "center_crop": False,
                                        "files": ["a.png", "b.png"], "with_prior_preservation": False},
             "fid_score_before": 310.5, "fid_images": 8, "trainable_parameters": 1200,
             "parameters": {"total": 5000, "trainable": 1200}, "initial_loss": 0.52, "resumed_from": "ckpt/step-4",
             "steps": 2, "loss_history": [(1, 0.61), (2, 0.47)], "epochs": 0.4, "train_images": 2,
             "train_images_per_second": None, "train_loss": 0.47, "final_loss": 0.44,
             "images": {"prompt": "a sks dog", "grid": "image_grid.png", "before": ["images/before-0.png"],
                        "after": ["images/after-0.png"]},
             "fid_score": 280.25, "train_runtime_s": 3.5, "method": "full", "instance_prompt": "a sks dog",
             "job": {"method": "DreamBooth, full fine-tuning of the UNet"}, "phases": {"training": 1.5}}


def test_the_diffusion_keys_are_declared_and_written_as_recorded():
    recorded = MetricsFile.model_validate(DIFFUSION)
    assert recorded.model_extra == {} and recorded.data.model_extra == {} and recorded.images.model_extra == {}
    assert recorded.method == "full" and recorded.images.before == ["images/before-0.png"]
    assert metrics_json(DIFFUSION) == json.dumps(DIFFUSION, indent=2, default=str) + "\n"
    # a sub-model dumps its declared fields first: the file keeps the recorded order inside it too
    shuffled = {**DIFFUSION, "data": dict(reversed(DIFFUSION["data"].items()))}
    assert metrics_json(shuffled) == json.dumps(shuffled, indent=2, default=str) + "\n"


@pytest.mark.parametrize("wrong", [{"fid_score": "n/a"}, {"method": "lora (merged)"}, {"loss_history": [[1, "x"]]},
                                   {"data": {**DIFFUSION["data"], "instance_images": "five"}},
                                   {"preference_accuracy": {"after": {"accuracy": "high"}}}])
def test_a_wrong_typed_diffusion_or_inner_value_is_refused_when_writing(wrong):
    with pytest.raises(ValueError):
        metrics_json({**DIFFUSION, **wrong})


def test_an_unfit_file_is_read_with_its_dict_values_as_sub_models():
    recorded = read_metrics({**DIFFUSION, "fid_score": "n/a", "preference": {"method": "dpo", "beta": "?"},
                             "preference_accuracy": {"before": {"accuracy": 0.5, "pairs": 4}}})
    assert recorded.fid_score == "n/a" and recorded.data.instance_images == 5 and recorded.images.grid == "image_grid.png"
    assert recorded.preference.method == "dpo" and recorded.preference.beta == "?"
    assert recorded.preference_accuracy.before.pairs == 4 and recorded.preference_accuracy.after is None


@pytest.mark.parametrize("change", [{}, {"fid_score": "n/a"}], ids=["fit", "unfit"])
def test_the_image_report_reads_the_typed_fields(change):
    from tuneforge.report.gather import JobOutput
    from tuneforge.report.image_sections import data_section, images_section, results_section

    job = JobOutput(source=Path("job"), label="job", metrics={**DIFFUSION, **change}, image_grid=b"png")
    data = {row[0].text: row[1].text for row in data_section(job).blocks[1].rows}
    assert data["instance prompt"] == "a sks dog" and data["instance images"] == "5" and data["files"] == "a.png, b.png"
    assert 'prompt "a sks dog"' in images_section(job).blocks[0].caption
    rows = {row[0].text: [cell.text for cell in row[1:]] for row in results_section(job).blocks[0].rows}
    assert rows["fid_score against the training images"][0] == "310.5000"
    assert len(rows) == 3 and "fid_score compares 8 pictures" in results_section(job).blocks[0].caption


def test_the_preference_rows_read_the_typed_fields_of_an_unfit_file():
    from tuneforge.report.preference import preference_method, preference_rows

    recorded = read_metrics({"steps": "x", "preference": {"method": "kto"}, "final_reward_margin": 0.25,
                             "preference_accuracy": {"before": {"accuracy": 0.5, "pairs": 4}, "after": {"accuracy": 0.75}}})
    assert preference_method(recorded) == "kto"
    rows = [[cell.text for cell in row] for row in preference_rows(recorded)]
    assert rows[0][0].endswith(", 4 pairs)") and rows[0][1:3] == ["0.5000", "0.7500"]
    assert rows[1][:3] == ["reward margin (final evaluation)", "-", "0.2500"]
