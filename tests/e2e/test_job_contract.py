"""The job's contract around training: config files, channels, output folders, the failure file of
an earlier run, and a training process killed outright. Each case exits non-zero with a first line
(in output/failure, or on stderr where output/ is unusable) naming the file and the fix, and keeps
what was already there."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO

QUICK = {"instruction_tuned": "True", "max_steps": "1", "rouge_samples": "0"}


@pytest.fixture
def ready(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    return job


@pytest.mark.parametrize("name,text,kind,error", [
    ("hyperparameters.json", "[]", "a list ([])", "HyperparameterError"),
    ("hyperparameters.json", '"epoch=3"', 'a string ("epoch=3")', "HyperparameterError"),
    ("hyperparameters.json", "3", "a number (3)", "HyperparameterError"),
    ("resourceconfig.json", '["algo-1"]', 'a list (["algo-1"])', "ResourceError"),
])
def test_config_file_that_is_not_an_object(ready, name, text, kind, error):
    job = ready
    job.hyperparameters(QUICK)
    path = job.base / "input" / "config" / name
    path.write_text(text)
    assert job.run_in_process() == 1
    assert job.failure_first_line() == (f"{error}: {path}: must be a JSON object, but it holds {kind}. Fix: write "
                                        "the file as one JSON object " + (
                                            'of names to string values, e.g. {"epoch": "3", "learning_rate": '
                                            '"0.0001"}' if name == "hyperparameters.json" else
                                            'such as {"current_host": "algo-1", "hosts": ["algo-1"]}'))
    assert list(job.model_dir.iterdir()) == []


def test_both_training_channels_fail_naming_both(ready):
    job = ready  # `train` holds 16 rows
    (job.channel("training") / "rows.jsonl").write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    job.hyperparameters(QUICK)
    assert job.run_in_process() == 1
    assert job.failure_first_line() == (
        f"DataError: {job.base / 'input' / 'data'}: two training channels, `train` and `training`, are both present "
        "and only one is read. Fix: put all training data in one channel (`train` or `training`) and remove the "
        "other; data to validate on goes in `validation`")
    assert list(job.model_dir.iterdir()) == []


def test_a_file_where_model_belongs_fails_naming_it(ready):
    job = ready
    job.hyperparameters(QUICK)
    job.model_dir.write_text("an earlier model's notes\n")
    assert job.run_in_process() == 1
    assert job.failure_first_line() == (
        f"ResourceError: {job.model_dir}: the job cannot write its outputs here: {job.model_dir} is a file, not a "
        f"folder. Fix: move that file away so that {job.model_dir} can be a folder (or mount a writable folder "
        "there)")
    assert job.model_dir.read_text() == "an earlier model's notes\n"


def test_a_file_where_output_belongs_fails_on_stderr(ready):
    job = ready
    job.hyperparameters(QUICK)
    output = job.base / "output"
    output.write_text("not a folder\n")
    result = job.run_cli(timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    reason = (f"ResourceError: {output}: the job cannot write its outputs here: {output} is a file, not a folder. "
              f"Fix: move that file away so that {output} can be a folder (or mount a writable folder there)")
    assert f"tuneforge: cannot write {output / 'failure'} ([Errno " in result.stderr
    assert f"the failure was:\n{reason}\n" in result.stderr
    assert output.read_text() == "not a folder\n"
    assert not job.model_dir.exists()  # nothing created past the folder that failed


def test_a_successful_rerun_leaves_no_failure_file(ready):
    job = ready
    job.hyperparameters({**QUICK, "learning_rat": "0.1"})
    assert job.run_in_process() == 1
    first = job.failure_first_line()
    assert first.startswith("HyperparameterError: hyperparameter learning_rat: unknown hyperparameter")
    job.hyperparameters(QUICK)  # fixed, rerun in the same folder
    assert job.run_in_process() == 0
    assert not job.failure.exists()
    assert (job.base / "output" / "previous-failure.txt").read_text().splitlines()[0] == first
    assert (job.model_dir / "tuneforge.json").exists()


def test_training_process_killed_by_sigkill_is_reported(ready):
    """The kernel's out-of-memory killer sends SIGKILL, which leaves no Python error: the launcher,
    which runs training in a child process, writes the failure file."""
    from tests.distributed.conftest import FAULTS

    job = ready
    job.hyperparameters(QUICK)
    env = dict(os.environ, TUNEFORGE_TEST_FAULT="kill",
               PYTHONPATH=os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH", "")) if p))
    for name in ("SAGEMAKER_BASE_DIR", "RANK", "TUNEFORGE_TEST_FAULT_RANK"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-m", "tuneforge.cli", "train", "--base-dir", str(job.base)],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 137, result.stderr[-3000:]
    assert job.failure_first_line() == (
        "the training process was killed by signal SIGKILL (9) (the kernel's out-of-memory killer sends SIGKILL "
        "when host memory runs out, so most likely out of memory). Fix: lower per_device_train_batch_size "
        "or max_input_length, set gradient_checkpointing=True, use LoRA, QLoRA or ZeRO-3 with offload, or use an "
        "instance with more memory")
    assert list(job.model_dir.iterdir()) == []


def test_single_process_sigterm_still_checkpoints_and_stops(ready):
    """`tuneforge train` runs a one-process job in a child: a SIGTERM to the whole process group (as
    `docker stop` or Slurm's scancel send) reaches it, and it checkpoints and stops as before."""
    from tests.distributed.conftest import finish, job_env, start, wait_for
    from tuneforge.job.checkpoints import latest_checkpoint

    job = ready
    job.hyperparameters({**QUICK, "max_steps": "5000", "checkpoint_steps": "2", "evaluation_strategy": "no"})
    process = start(job, job_env(nproc=1), new_session=True)
    assert wait_for(lambda: latest_checkpoint(job.base / "checkpoints"), timeout=240, interval=0.05)
    os.killpg(process.pid, signal.SIGTERM)
    code, log = finish(process, job, timeout=120)
    assert code == 143, log[-3000:]
    stopped = latest_checkpoint(job.base / "checkpoints")
    assert job.failure_first_line() == (f"stopped by SIGTERM at step {stopped.name.split('-')[1]}; checkpoint saved "
                                        f"to {stopped}; rerun to resume")
    assert list(job.model_dir.iterdir()) == []


def _sigterm_when_called(monkeypatch, owner, name):
    """Send this process SIGTERM (the stop handler is installed in-process) as owner.name begins."""
    real = getattr(owner, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, signalled)


def test_sigterm_during_the_final_evaluation_ends_it_and_stops_without_a_model(ready, monkeypatch, capfd):
    from tuneforge.llm.recipe import Recipe

    job = ready
    job.hyperparameters({**QUICK, "max_steps": "2", "checkpoint_steps": "2", "rouge_samples": "4"})
    _sigterm_when_called(monkeypatch, Recipe, "evaluate")
    assert job.run_in_process() == 143
    checkpoint = job.base / "checkpoints" / "checkpoint-2"
    assert job.failure_first_line() == (f"stopped by SIGTERM during the final evaluation, before the model was "
                                        f"saved; checkpoint saved to {checkpoint}; rerun to resume")
    assert list(job.model_dir.iterdir()) == []
    metrics = job.metrics()
    assert metrics["steps"] == 2 and "eval_loss" not in metrics and "rougeL" not in metrics  # ended at its first batch
    assert "SIGTERM received during the final evaluation: the evaluation ends" in "".join(capfd.readouterr())
    monkeypatch.undo()
    assert job.run_in_process() == 0  # the rerun evaluates and saves
    assert job.metrics()["resumed_from"] == str(checkpoint) and "eval_loss" in job.metrics()


def test_sigterm_during_the_model_save_finishes_it_and_says_so(ready, monkeypatch, capfd):
    from tuneforge.model_folder import is_complete
    from tuneforge.llm import saving

    job = ready
    job.hyperparameters(QUICK)
    _sigterm_when_called(monkeypatch, saving, "save_model")
    assert job.run_in_process() == 0
    assert is_complete(job.model_dir) and not job.failure.exists()
    log = "".join(capfd.readouterr())
    assert "SIGTERM received during the model save: the save is finished (it must fit the 120 s before SIGKILL)" \
        in log and "SIGTERM arrived during the model save: the save was finished, model/ is complete" in log
