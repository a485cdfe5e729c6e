"""Helpers for multi-process jobs on one CPU machine: torchrun over gloo on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAULTS = Path(__file__).resolve().parent / "faults"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resource_config(job, hosts=("algo-1",), current="algo-1") -> None:
    (job.base / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": current, "hosts": list(hosts), "network_interface_name": "lo"}))


def job_env(*, nproc: int = 2, port: int | None = None, **extra) -> dict:
    env = dict(os.environ)
    env.pop("SAGEMAKER_BASE_DIR", None)
    env.update(TUNEFORGE_NPROC_PER_NODE=str(nproc), TUNEFORGE_MASTER_ADDR="127.0.0.1",
               TUNEFORGE_MASTER_PORT=str(port or free_port()), OMP_NUM_THREADS="1",
               TUNEFORGE_SHUTDOWN_TIMEOUT="60")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start(job, env: dict, log_name: str = "train.log", new_session: bool = False) -> subprocess.Popen:
    """`tuneforge train` on the job tree in the background, output to a log file beside it;
    new_session: in a process group of its own (its pid is the group id) for os.killpg."""
    log = open(job.base.parent / log_name, "w")
    return subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "train", "--base-dir", str(job.base)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=new_session)


def finish(process: subprocess.Popen, job, timeout: float = 300, log_name: str = "train.log") -> tuple[int, str]:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    return code, (job.base.parent / log_name).read_text()


def run_job(job, timeout: float = 300, **env) -> tuple[int, str]:
    return finish(start(job, job_env(**env)), job, timeout)


def wait_for(predicate, timeout: float, interval: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def reload_and_generate(model_dir: Path, n_tokens: int = 6):
    """model/ loads with the Auto classes and generates: returns (model, generated ids)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = torch.tensor([tokenizer("What color is the lemon?")["input_ids"]])
    out = model.generate(ids, max_new_tokens=n_tokens, min_new_tokens=n_tokens, do_sample=False)
    return model, out[0, ids.shape[1]:]


@pytest.fixture
def small_job(job, tiny):
    """A tiny-llama instruction job with a two-process world on this machine."""
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=32, n_val=8)
    resource_config(job)
    return job
