"""enable_fsdp=True on a CPU-only machine: accelerate runs FSDP only on GPUs, so the job says so
plainly and trains with DDP, and metrics.json records what actually ran (docs/scale.md)."""

import pytest

from .conftest import run_job

pytestmark = pytest.mark.slow


def test_fsdp_on_cpu_warns_and_trains_with_ddp(small_job):
    job = small_job
    job.hyperparameters({"instruction_tuned": "True", "enable_fsdp": "True", "max_steps": "2",
                         "per_device_train_batch_size": "4", "load_best_model_at_end": "False", "rouge_samples": "0"})
    code, log = run_job(job)
    assert code == 0, log[-3000:]
    assert "enable_fsdp=True needs GPUs" in log and "this job trains with DDP" in log
    metrics = job.metrics()
    assert metrics["parallelism"] == "ddp (enable_fsdp ignored: no GPU)"
    assert metrics["distributed_type"] == "MULTI_CPU" and metrics["steps"] == 2
    assert (job.model_dir / "model.safetensors").exists()
