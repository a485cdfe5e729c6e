"""A failing rank fails the job: one failure file naming that rank, a non-zero exit, every rank
torn down, no model written."""

import os
import signal
import socket

import pytest

from .conftest import FAULTS, finish, job_env, run_job, start, wait_for

QUICK = {"instruction_tuned": "True", "max_steps": "4", "rouge_samples": "0", "per_device_train_batch_size": "4"}


def _fault_env(kind: str) -> dict:
    path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "TUNEFORGE_TEST_FAULT": kind, "TUNEFORGE_TEST_FAULT_RANK": "1"}


def _failure_files(job) -> list:
    return [p for p in job.base.rglob("*") if p.name == "failure"]


@pytest.mark.slow
def test_python_error_on_rank_1_gives_one_failure_file_naming_it(small_job):
    job = small_job
    job.hyperparameters(QUICK)
    code, log = run_job(job, **_fault_env("raise"))
    assert code == 1, log[-3000:]
    assert _failure_files(job) == [job.failure]
    text = job.failure.read_text()
    assert job.failure_first_line() == "RuntimeError: injected failure (rank 1)"
    assert "Traceback" in text and "_faulty_train" in text
    assert list(job.model_dir.iterdir()) == []
    assert "injected failure" in log  # the traceback reached the log too


@pytest.mark.slow
def test_rank_killed_by_a_signal_is_named_with_the_signal(small_job):
    job = small_job
    job.hyperparameters(QUICK)
    code, log = run_job(job, **_fault_env("kill"))
    assert code == 1, log[-3000:]
    assert _failure_files(job) == [job.failure]
    first = job.failure_first_line()
    assert first.startswith("rank 1 was killed by signal SIGKILL (9)"), first
    assert "out-of-memory" in first and "Fix:" in first
    assert list(job.model_dir.iterdir()) == []


def _job_processes(base) -> dict[int, bytes]:
    """pid -> command line of every process whose command line or environment names this job's tree."""
    needle, found = str(base).encode(), {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmd, open(f"/proc/{entry}/environ", "rb") as env:
                cmdline, environ = cmd.read(), env.read()
        except OSError:
            continue
        if needle in cmdline or needle in environ:
            found[int(entry)] = cmdline.replace(b"\0", b" ")
    return found


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
            sock.listen()
            return True
        except OSError:
            return False


@pytest.mark.slow
def test_one_host_job_rendezvous_on_loopback_without_sagemaker_dns(small_job):
    """resourceconfig names the host `algo-1`, which resolves only inside SageMaker: one host needs
    no name, so a 2-process job (as with several GPUs or DeepSpeed) trains anywhere."""
    job = small_job
    job.hyperparameters(QUICK)
    env = job_env()
    del env["TUNEFORGE_MASTER_ADDR"]
    code, log = finish(start(job, env), job, timeout=240)
    assert code == 0, log[-3000:]
    assert "--master_addr=127.0.0.1" in log
    assert not job.failure.exists() and (job.model_dir / "tuneforge.json").exists()


@pytest.mark.slow
def test_killing_the_launcher_ends_every_process_of_the_job(small_job):
    """SIGKILL of `train` (a scheduler's hard timeout): torchrun and its ranks die with it and
    the rendezvous port is free for the next job."""
    job = small_job
    job.hyperparameters({**QUICK, "max_steps": "100000"})
    env = job_env()
    port = int(env["TUNEFORGE_MASTER_PORT"])
    process = start(job, env)
    try:
        ranks = wait_for(lambda: [p for p, cmd in _job_processes(job.base).items()
                                  if b"tuneforge.recipes" in cmd][1:], timeout=120)
        assert ranks, "the two ranks did not start"
        assert not _port_is_free(port)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
        gone = wait_for(lambda: not _job_processes(job.base), timeout=10, interval=0.1)
        assert gone, f"still running: {_job_processes(job.base)}"
        assert wait_for(lambda: _port_is_free(port), timeout=5), f"port {port} still in use"
    finally:
        for pid in _job_processes(job.base):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
