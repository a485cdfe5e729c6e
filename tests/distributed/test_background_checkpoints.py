"""Checkpoints written in the background (job/background_checkpoints.py): the snapshot is taken
before training moves on, tied weights stay tied, a checkpoint is committed only once its files are
written, a failed write names the checkpoint, and a whole job's checkpoints equal the synchronous
ones tensor for tensor."""

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerControl, TrainerState, TrainingArguments

from tuneforge.job import background_checkpoints
from tuneforge.job.background_checkpoints import CheckpointWriter, snapshot, storage_bytes
from tuneforge.llm.callbacks import CommitCheckpoints
from tuneforge.job.checkpoints import MARKER, complete_checkpoints


def _deferring_writer() -> CheckpointWriter:
    writer = CheckpointWriter(enabled=True)
    writer.begin(final=False)
    return writer


def test_a_snapshot_copies_each_storage_once_and_keeps_tied_tensors_tied():
    embedding = torch.randn(8, 4)
    state = {"embed.weight": embedding, "lm_head.weight": embedding, "rows": embedding[2:4], "step": 3,
             "groups": [{"lr": 0.1, "params": [0, 1]}]}
    copy = snapshot(state)
    assert storage_bytes(state) == embedding.nbytes
    assert copy["embed.weight"].untyped_storage().data_ptr() == copy["lm_head.weight"].untyped_storage().data_ptr()
    assert copy["embed.weight"].untyped_storage().data_ptr() != embedding.untyped_storage().data_ptr()
    assert torch.equal(copy["rows"], embedding[2:4]) and copy["groups"] == state["groups"]
    embedding.add_(1.0)  # training moves on
    assert torch.equal(copy["embed.weight"] + 1.0, embedding)


def test_training_may_change_the_weights_while_the_old_ones_are_written(tmp_path):
    weights = {"w": torch.arange(6.0)}
    release = threading.Event()

    def slow_save(state, path):
        release.wait(10)
        torch.save(state, path)

    writer = _deferring_writer()
    assert writer.defer(slow_save, weights, tmp_path / "w.pt")
    weights["w"].mul_(100.0)  # the next optimizer step
    assert not writer.done()
    release.set()
    writer.wait(tmp_path)
    assert writer.done() and len(writer.write_s) == 1
    assert torch.equal(torch.load(tmp_path / "w.pt")["w"], torch.arange(6.0))


def test_outside_a_deferred_checkpoint_or_short_of_memory_the_caller_writes(monkeypatch):
    writer = CheckpointWriter(enabled=True)
    writer.begin(final=True)  # the last step: written at once
    assert not writer.defer(torch.save, {"w": torch.zeros(2)}, "unused")
    writer.begin(final=False)
    monkeypatch.setattr(background_checkpoints, "MEMORY_HEADROOM", 1e15)  # no machine has this much free
    assert not writer.defer(torch.save, {"w": torch.zeros(2)}, "unused")


def test_a_failed_background_write_is_raised_naming_the_checkpoint(tmp_path):
    def full_disk(state, path):
        raise OSError(28, "No space left on device")

    writer = _deferring_writer()
    writer.defer(full_disk, {"w": torch.zeros(2)}, "unused")
    with pytest.raises(OSError, match="No space left") as raised:
        writer.wait(tmp_path / "checkpoint-4")
    assert f"while writing checkpoint {tmp_path / 'checkpoint-4'} in the background" in raised.value.__notes__


def test_a_checkpoint_is_committed_only_when_its_files_are_written(tmp_path):
    staging, final_dir = tmp_path / "staging", tmp_path / "checkpoints"
    final_dir.mkdir()
    staged = staging / "checkpoint-2"
    staged.mkdir(parents=True)
    (staged / "scheduler.pt").write_text("written at once")
    release = threading.Event()

    def slow_write(state, path):
        release.wait(10)
        torch.save(state, path)

    commit = CommitCheckpoints(staging, final_dir, keep=2, writer=_deferring_writer())
    args = TrainingArguments(output_dir=str(staging), report_to=[], use_cpu=True)
    state, control = TrainerState(global_step=2, max_steps=10), TrainerControl()
    commit.writer.defer(slow_write, {"w": torch.ones(3)}, staged / "optimizer.pt")
    commit.writer.end()
    commit.on_save(args, state, control)
    assert commit.pending == 2 and not (staged / MARKER).exists() and complete_checkpoints(final_dir) == []
    state.global_step = 3
    commit.on_step_end(args, state, control)  # still writing: training goes on, nothing is committed
    assert commit.pending == 2 and complete_checkpoints(final_dir) == []
    release.set()
    commit.writer._futures[0].result(10)
    state.global_step = 4
    commit.on_step_end(args, state, control)
    assert commit.pending is None and complete_checkpoints(final_dir) == [final_dir / "checkpoint-2"]
    manifest = json.loads((final_dir / "checkpoint-2" / MARKER).read_text())
    assert set(manifest["files"]) == {"scheduler.pt", "optimizer.pt"}
    assert commit.summary()["written_in_background"] == 1


SHORT = {"instruction_tuned": "True", "peft_type": "none", "max_steps": "6", "checkpoint_steps": "2",
         "save_total_limit": "5", "per_device_train_batch_size": "4", "rouge_samples": "0", "logging_steps": "1",
         "evaluation_strategy": "no", "learning_rate": "0.001", "knowledge_check": "False"}


def _checkpoints(tmp_path, tiny, family: str, background: bool) -> tuple[Path, dict]:
    from tests.conftest import Job

    job = Job(tmp_path / ("background" if background else "at-once") / "opt" / "ml")
    job.add_model(tiny(family))
    job.add_sample_data("instruction", n_train=32, n_val=4)
    job.hyperparameters({**SHORT, "async_checkpoint": str(background)})
    assert job.run_in_process() == 0, job.failure_first_line()
    return job.base / "checkpoints", job.metrics()["checkpoints"]


@pytest.mark.parametrize("family", ["llama", "gemma"], ids=["llama", "gemma-tied-embeddings"])
def test_background_checkpoints_equal_the_ones_written_at_once(tmp_path, tiny, family):
    background, summary = _checkpoints(tmp_path, tiny, family, background=True)
    at_once, summary_at_once = _checkpoints(tmp_path, tiny, family, background=False)
    # checkpoint-6 is the last step's: written at once so the end of training can load it
    assert summary["written"] == 3 and summary["written_in_background"] == 2
    assert summary_at_once["written_in_background"] == 0 and summary_at_once["background_off"] == "async_checkpoint=false"
    for step in (2, 4, 6):
        mine, theirs = background / f"checkpoint-{step}", at_once / f"checkpoint-{step}"
        names = sorted(p.relative_to(mine).as_posix() for p in mine.rglob("*") if p.is_file())
        assert names == sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*") if p.is_file())
        weights, reference = load_file(mine / "model.safetensors"), load_file(theirs / "model.safetensors")
        assert weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in weights)
        optimizer, expected = (torch.load(folder / "optimizer.pt", weights_only=True) for folder in (mine, theirs))
        assert optimizer["param_groups"] == expected["param_groups"]
        assert all(torch.equal(optimizer["state"][i][name], expected["state"][i][name])
                   for i in expected["state"] for name in expected["state"][i])
