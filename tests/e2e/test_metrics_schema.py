"""A tiny job's metrics.json fits its schema (tuneforge/metrics_file.py) as written."""

import pytest

from tuneforge.metrics_file import MetricsFile


@pytest.mark.parametrize("peft", ["none", "lora"])
def test_tiny_job_metrics_fit_the_schema(job, tiny, peft):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    job.hyperparameters({"instruction_tuned": "True", "max_steps": "2", "rouge_samples": "2", "peft_type": f'"{peft}"'})
    assert job.run_in_process() == 0
    metrics = job.metrics()
    recorded = MetricsFile.model_validate(metrics)
    assert recorded.steps == 2 and recorded.parallelism and recorded.batching and recorded.loss
    assert set(recorded.model_fields_set) | set(recorded.model_extra or {}) == set(metrics)
