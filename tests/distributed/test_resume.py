"""SIGTERM mid-training (SageMaker stop, spot interruption) under torchrun with 2 processes:
a checkpoint is saved collectively, the job exits non-zero saying where to resume, and a rerun
ends where an uninterrupted run ends: same step count, final losses within 2%.

The uninterrupted run is also the plain 2-process DDP test: it trains, saves once, reloads."""

import json
import os
import signal
import time

import pytest

from tuneforge.job.checkpoints import complete_checkpoints, latest_checkpoint

from .conftest import finish, job_env, reload_and_generate, resource_config, run_job, start, wait_for

pytestmark = pytest.mark.slow

STEPS = 60
FULL = {"instruction_tuned": "True", "peft_type": "none", "max_steps": str(STEPS), "checkpoint_steps": "5",
        "save_total_limit": "2", "per_device_train_batch_size": "4", "learning_rate": "0.001",
        "evaluation_strategy": "no", "logging_steps": "1", "rouge_samples": "0", "seed": "7"}


def _prepare(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=64, n_val=8)
    resource_config(job)
    job.hyperparameters(FULL)


def _history(job) -> list[dict]:
    return json.loads((job.base / "output" / "data" / "log_history.json").read_text())


def _last_train_loss(job) -> float:
    return [row["loss"] for row in _history(job) if "loss" in row][-1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny):
    from tests.conftest import Job

    job = Job(tmp_path_factory.mktemp("uninterrupted") / "opt" / "ml")
    _prepare(job, tiny)
    code, log = run_job(job)
    assert code == 0, log[-3000:]
    return job


def test_ddp_two_processes_train_and_save_once(uninterrupted):
    job = uninterrupted
    metrics = job.metrics()
    assert metrics["parallelism"] == "ddp" and metrics["distributed_type"] == "MULTI_CPU"
    assert metrics["steps"] == STEPS
    losses = [row["loss"] for row in _history(job) if "loss" in row]
    assert len(losses) == STEPS and losses[-1] < losses[0] - 1.0  # it learned
    assert not job.failure.exists() and not (job.base / "output" / ".ranks" / "rank-0.error").exists()
    # one model, written once, loadable; checkpoints rotated to save_total_limit
    assert json.loads((job.model_dir / "tuneforge.json").read_text())["adapter_only"] is False
    model, generated = reload_and_generate(job.model_dir)
    assert len(generated) == 6
    assert [p.name for p in complete_checkpoints(job.base / "checkpoints")] == [f"checkpoint-{STEPS - 5}",
                                                                                  f"checkpoint-{STEPS}"]
    # how long training waited for its checkpoints, and how big the last one was
    written = metrics["checkpoints"]
    assert written["written"] == STEPS // 5 and 0 < written["pause_s_max"] <= written["pause_s_total"]
    last = job.base / "checkpoints" / f"checkpoint-{STEPS}"
    assert written["last_mib"] == round(sum(f.stat().st_size for f in last.rglob("*") if f.is_file()) / 2**20, 1)


def test_sigterm_saves_a_checkpoint_and_a_rerun_resumes_to_the_same_result(job, tiny, uninterrupted):
    _prepare(job, tiny)
    process = start(job, job_env())
    first = wait_for(lambda: latest_checkpoint(job.base / "checkpoints"), timeout=240, interval=0.05)
    assert first is not None, "no checkpoint appeared"
    process.send_signal(signal.SIGTERM)
    code, log = finish(process, job, timeout=120)
    assert code == 143, log[-3000:]
    reason = job.failure_first_line()
    stopped = latest_checkpoint(job.base / "checkpoints")
    step = int(stopped.name.split("-")[1])
    assert 5 <= step < STEPS
    assert reason == f"stopped by SIGTERM at step {step}; checkpoint saved to {stopped}; rerun to resume"
    assert list(job.model_dir.iterdir()) == []  # no half model

    started = time.time()
    code, log = run_job(job)
    assert code == 0, log[-3000:]
    # the stop note is no longer the job's failure: it is kept as output/previous-failure.txt
    assert not job.failure.exists()
    assert (job.base / "output" / "previous-failure.txt").read_text().startswith(reason)
    metrics = job.metrics()
    assert metrics["resumed_from"] == str(stopped)
    assert metrics["steps"] == uninterrupted.metrics()["steps"] == STEPS
    assert f"resuming from {stopped}" in log
    reference, resumed = _last_train_loss(uninterrupted), _last_train_loss(job)
    assert abs(resumed - reference) / reference < 0.02, (resumed, reference)
    ref_eval, eval_loss = uninterrupted.metrics()["eval_loss"], metrics["eval_loss"]
    assert abs(eval_loss - ref_eval) / ref_eval < 0.02, (eval_loss, ref_eval)
    print(f"resume: stopped at step {step}; final train loss {resumed:.5f} vs {reference:.5f} uninterrupted; "
          f"eval loss {eval_loss:.5f} vs {ref_eval:.5f}; rerun took {time.time() - started:.1f} s")


def test_sigterm_to_every_process_at_once_still_checkpoints(job, tiny):
    """Slurm's scancel and `kill -- -PGID` signal the launcher, torchrun and every rank at the same
    moment, so a rank may see SIGTERM before the launcher's stop marker exists; it must still
    checkpoint and stop, not leave as if torn down after another rank's failure."""
    _prepare(job, tiny)
    process = start(job, job_env(), new_session=True)
    first = wait_for(lambda: latest_checkpoint(job.base / "checkpoints"), timeout=240, interval=0.05)
    assert first is not None, "no checkpoint appeared"
    os.killpg(process.pid, signal.SIGTERM)
    code, log = finish(process, job, timeout=120)
    assert code == 143, log[-3000:]
    stopped = latest_checkpoint(job.base / "checkpoints")
    assert job.failure_first_line().startswith(f"stopped by SIGTERM at step {stopped.name.split('-')[1]}; "
                                               f"checkpoint saved to {stopped}")


@pytest.mark.parametrize("settings", [{"deepspeed": "zero3", "peft_type": "lora"}, {"deepspeed": "zero2"},
                                      {"peft_type": "lora"}], ids=["zero3-lora", "zero2-full", "ddp-lora"])
def test_sigterm_and_resume_with_each_engine(job, tiny, settings):
    """The stop/resume cycle with DeepSpeed shards and with LoRA adapter checkpoints."""
    _prepare(job, tiny)
    job.hyperparameters({**FULL, "max_steps": "40", **settings})
    process = start(job, job_env())
    first = wait_for(lambda: latest_checkpoint(job.base / "checkpoints"), timeout=240, interval=0.05)
    assert first is not None, "no checkpoint appeared"
    process.send_signal(signal.SIGTERM)
    code, log = finish(process, job, timeout=120)
    assert code == 143, log[-3000:]
    stopped = latest_checkpoint(job.base / "checkpoints")
    assert job.failure_first_line().startswith("stopped by SIGTERM at step")
    code, log = run_job(job)
    assert code == 0, log[-3000:]
    metrics = job.metrics()
    assert metrics["resumed_from"] == str(stopped) and metrics["steps"] == 40
    reload_and_generate(job.model_dir)
