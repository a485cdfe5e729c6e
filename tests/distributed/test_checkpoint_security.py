"""/opt/ml/checkpoints comes back from the job's checkpoint S3 prefix, so whoever can write that
prefix writes the files a resume loads. DeepSpeed loads its model states with
torch.load(weights_only=False): a planted pickle would run code in the job. A resume must refuse
it, name the file, and run nothing; a normal ZeRO-2 resume still works. Also: under DeepSpeed
samples.jsonl is written (answers and references; no "before" answers, with the reason)."""

import json
import os
import shutil

import pytest
import torch

from tests.conftest import Job
from tuneforge.job.checkpoints import MARKER

from .conftest import reload_and_generate, resource_config, run_job

pytestmark = pytest.mark.slow

HP = {"instruction_tuned": "True", "peft_type": "none", "max_steps": "2", "checkpoint_steps": "2",
      "per_device_train_batch_size": "4", "learning_rate": "0.01", "load_best_model_at_end": "False",
      "rouge_samples": "2", "max_output_length": "4", "seed": "3", "deepspeed": "zero2"}


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def zero2_checkpointed(tmp_path_factory, tiny):
    job = Job(tmp_path_factory.mktemp("zero2-security") / "opt" / "ml")
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    resource_config(job)
    job.hyperparameters(HP)
    code, log = run_job(job)
    assert code == 0, log[-3000:]
    return job


def _copy(job, tmp_path) -> Job:
    target = tmp_path / "opt" / "ml"
    shutil.copytree(job.base, target, symlinks=True)
    copy = Job(target)
    copy.hyperparameters({**HP, "max_steps": "4"})  # resume checkpoint-2 and train on
    return copy


def test_samples_are_written_under_deepspeed(zero2_checkpointed):
    job = zero2_checkpointed
    samples = [json.loads(line) for line in (job.base / "output" / "data" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2
    for sample in samples:
        assert sample["prompt"] and sample["reference"] and isinstance(sample["after"], str)
        assert isinstance(sample["before"], str)  # rank 0 answers on the whole ZeRO-2 weights
    assert job.metrics()["eval_before_skipped"] == "DeepSpeed/FSDP engines are built once per Trainer"


def test_a_normal_zero2_checkpoint_resumes(zero2_checkpointed, tmp_path):
    job = _copy(zero2_checkpointed, tmp_path)
    code, log = run_job(job)
    assert code == 0, log[-3000:]
    metrics = job.metrics()
    assert metrics["resumed_from"] == str(job.base / "checkpoints" / "checkpoint-2") and metrics["steps"] == 4
    reload_and_generate(job.model_dir)


def test_a_planted_pickle_in_deepspeed_model_states_never_runs(zero2_checkpointed, tmp_path):
    job = _copy(zero2_checkpointed, tmp_path)
    checkpoint = job.base / "checkpoints" / "checkpoint-2"
    states = checkpoint / "global_step2" / "mp_rank_00_model_states.pt"
    marker = tmp_path / "payload-ran"
    content = torch.load(states, weights_only=False)  # our own file, before tampering
    content["extra"] = Payload(marker)
    torch.save(content, states)
    manifest = json.loads((checkpoint / MARKER).read_text())
    manifest["files"]["global_step2/mp_rank_00_model_states.pt"] = states.stat().st_size  # the attacker fixes it
    (checkpoint / MARKER).write_text(json.dumps(manifest))

    code, log = run_job(job)
    assert not marker.exists(), "the pickled payload ran"
    assert code == 1, log[-3000:]
    assert job.failure_first_line().startswith(
        f"CheckpointError: checkpoint file {states} holds code or objects that are not allowed in a checkpoint "
        "(posix.system); nothing was loaded from it. Fix: delete " + str(checkpoint))
    # model/ is as this run found it: the first run's model
    before = zero2_checkpointed.model_dir
    assert sorted(p.name for p in job.model_dir.iterdir()) == sorted(p.name for p in before.iterdir())
    assert (job.model_dir / "model.safetensors").read_bytes() == (before / "model.safetensors").read_bytes()
