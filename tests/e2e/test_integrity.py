"""Training integrity end to end (in-process, tiny llama): no non-finite model is published,
model/ holds a complete model or nothing (a real full disk), and reruns in the same folder
resume only what they can and should."""

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

SHORT = {"instruction_tuned": "True", "peft_type": "none", "max_steps": "2", "per_device_train_batch_size": "4",
         "rouge_samples": "0", "logging_steps": "1", "evaluation_strategy": "no", "learning_rate": "0.001"}


def _prepare(job, tiny, **hyperparameters):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    job.hyperparameters({**SHORT, **hyperparameters})


def _edit_base(job, name, edit):
    path = job.base / "input" / "data" / "model" / "model.safetensors"
    weights = load_file(str(path))
    edit(weights[name])
    save_file(weights, str(path), metadata={"format": "pt"})


def _unused_token(job) -> int:
    """The byte-level token of the NUL byte: in no text, so its embedding row is never read."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(job.base / "input" / "data" / "model")
    token = tokenizer.convert_tokens_to_ids("\u0100")  # GPT-2 byte-level alphabet: byte 0x00
    assert token != tokenizer.unk_token_id
    return token


def test_a_nan_loss_fails_at_its_step_and_publishes_nothing(job, tiny):
    _prepare(job, tiny)
    _edit_base(job, "model.layers.0.self_attn.q_proj.weight", lambda w: w.__setitem__((0, 0), float("nan")))
    assert job.run_in_process() == 1
    assert job.failure_first_line().startswith(
        "NonFiniteError: training loss became nan at step 1 (loss=nan, grad_norm=nan); training stopped and no "
        "model was saved. Fix: lower learning_rate (now 0.001)")
    assert list(job.model_dir.iterdir()) == []


def test_a_non_finite_weight_is_never_published(job, tiny):
    """Training itself stays finite (the NaN sits in an embedding row no example reads), so only
    the check before saving can catch it."""
    _prepare(job, tiny)
    row = _unused_token(job)
    _edit_base(job, "model.embed_tokens.weight", lambda w: w[row].fill_(float("nan")))
    assert job.run_in_process() == 1
    losses = [r["loss"] for r in json.loads((job.base / "checkpoints" / "checkpoint-2" / "trainer_state.json")
                                             .read_text())["log_history"] if "loss" in r]
    assert len(losses) == 2 and all(loss == loss for loss in losses)  # finite
    size = load_file(str(job.base / "input" / "data" / "model" / "model.safetensors"))["model.embed_tokens.weight"].numel()
    assert job.failure_first_line().startswith(
        f"NonFiniteError: the trained model has non-finite weights: model.embed_tokens.weight holds 64 of {size} "
        "values that are NaN or inf; model/ was not written")
    assert list(job.model_dir.iterdir()) == []


@pytest.fixture
def small_model_disk(job):
    """model/ on a 300 KiB tmpfs of its own: too small for the tiny model (real ENOSPC)."""
    job.model_dir.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(job.model_dir)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield job.model_dir
    subprocess.run(["umount", str(job.model_dir)], check=True)


def test_a_full_disk_leaves_model_dir_empty(job, tiny, small_model_disk):
    _prepare(job, tiny)
    assert job.run_in_process() == 1
    first = job.failure_first_line()
    assert first.startswith(f"ResourceError: {job.model_dir}: no space left while writing the trained model (")
    assert "Fix: give the job more disk" in first
    assert list(small_model_disk.iterdir()) == []  # no truncated model.safetensors, no staging folder


def test_a_rerun_after_max_steps_does_not_train_again(job, tiny):
    _prepare(job, tiny)
    assert job.run_in_process() == 0
    first = load_file(str(job.model_dir / "model.safetensors"))
    for _ in range(2):
        assert job.run_in_process() == 0
        metrics = job.metrics()
        assert metrics["steps"] == 2 and metrics["resumed_from"] == str(job.base / "checkpoints" / "checkpoint-2")
        assert metrics["already_trained"].startswith("the checkpoints had reached max_steps=2")
        assert sorted(p.name for p in (job.base / "checkpoints").iterdir()) == ["checkpoint-2"]
        again = load_file(str(job.model_dir / "model.safetensors"))
        assert all(torch.equal(first[k], again[k]) for k in first)  # the restored, not a retrained, model
    # raising max_steps trains on from there
    job.hyperparameters({**SHORT, "max_steps": "3"})
    assert job.run_in_process() == 0
    assert job.metrics()["steps"] == 3 and "already_trained" not in job.metrics()


def test_a_rerun_with_other_settings_starts_fresh_and_keeps_the_old_checkpoints(job, tiny):
    _prepare(job, tiny, peft_type="lora")
    assert job.run_in_process() == 0
    assert json.loads((job.base / "checkpoints" / "checkpoint-2" / "tuneforge-checkpoint.json").read_text()
                      )["identity"]["method"] == "lora r=8 targets=default"
    job.hyperparameters({**SHORT, "peft_type": "none"})
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    metrics = job.metrics()
    assert metrics["resumed_from"] is None and metrics["steps"] == 2
    moved = metrics["checkpoints_superseded"]
    assert moved["differences"] == ["method: 'lora r=8 targets=default' then, 'full' now"]
    assert (job.base / "checkpoints").joinpath(moved["moved_to"]).parent == job.base / "checkpoints"
    from pathlib import Path

    assert (Path(moved["moved_to"]) / "checkpoint-2" / "adapter_model.safetensors").exists()
    assert json.loads((job.model_dir / "tuneforge.json").read_text())["adapter_only"] is False


def test_a_tampered_trainer_state_is_skipped_for_the_previous_checkpoint(job, tiny, capfd):
    _prepare(job, tiny, checkpoint_steps="1")
    assert job.run_in_process() == 0
    newest = job.base / "checkpoints" / "checkpoint-2"
    state = json.loads((newest / "trainer_state.json").read_text())
    (newest / "trainer_state.json").write_text(json.dumps({**state, "log_history": "tampered"}))
    manifest = json.loads((newest / "tuneforge-checkpoint.json").read_text())  # rewritten too, as S3 allows
    manifest["files"]["trainer_state.json"] = (newest / "trainer_state.json").stat().st_size
    (newest / "tuneforge-checkpoint.json").write_text(json.dumps(manifest))
    job.hyperparameters({**SHORT, "checkpoint_steps": "1", "max_steps": "3"})
    capfd.readouterr()
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    log = "".join(capfd.readouterr())
    metrics = job.metrics()
    assert metrics["resumed_from"] == str(job.base / "checkpoints" / "checkpoint-1") and metrics["steps"] == 3
    assert (f"{newest} is not resumed from: trainer_state.json field 'log_history' holds a string, not a list "
            "of objects") in log
