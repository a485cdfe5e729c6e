"""metrics.json goes through its pydantic schema (tuneforge/metrics_file.py) unchanged, key for key."""

import json
import math

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
