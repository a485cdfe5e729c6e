"""The image helper scripts: syntax, the entry script's dispatch, and the local run scripts' --dry-run."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHELL_SCRIPTS = ["scripts/build-images.sh", "scripts/local-train.sh", "scripts/local-serve.sh",
                 "scripts/lock-requirements.sh", "docker/entrypoint.sh"]


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_syntax_and_strict_mode(script):
    path = REPO / script
    shell = "sh" if script.endswith("entrypoint.sh") else "bash"
    result = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = path.read_text()
    assert ("set -eu" if shell == "sh" else "set -euo pipefail") in text


def test_python_script_compiles():
    subprocess.run([sys.executable, "-m", "py_compile", str(REPO / "scripts/sagemaker_launch.py")], check=True)


# --- docker/entrypoint.sh -----------------------------------------------------------------------
@pytest.fixture
def fake_bin(tmp_path):
    """A PATH with stand-ins for `train` and `serve` that report argv and their parent pid."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("train", "serve"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "{name} argc=$# args=$* ppid=$PPID"\n')
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def run_entry(*args, path):
    env = dict(os.environ, PATH=f"{path}:/usr/bin:/bin")
    proc = subprocess.Popen(["sh", str(REPO / "docker/entrypoint.sh"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    return proc, out, err


def test_entry_train_execs_train_and_drops_arguments(fake_bin):
    proc, out, _ = run_entry("train", "--ignored", path=fake_bin)
    assert proc.returncode == 0
    # exec: `train` replaced the shell, so its parent is this test process, not a shell
    assert out.strip() == f"train argc=0 args= ppid={os.getpid()}"


def test_entry_train_checks_the_config_files_before_the_toolkit_reads_them(fake_bin, tmp_path):
    """sagemaker-training reads hyperparameters.json itself (a list there is its own raw error):
    the entrypoint runs `tuneforge check-job` first, which writes tuneforge's message."""
    base = tmp_path / "opt" / "ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text("[]")
    (base / "output").mkdir()
    (base / "output" / "failure").write_text("an earlier run's failure\n")
    env = dict(os.environ, PATH=f"{fake_bin}:{Path(sys.executable).parent}:/usr/bin:/bin", SAGEMAKER_BASE_DIR=str(base))
    proc = subprocess.run(["sh", str(REPO / "docker/entrypoint.sh"), "train"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "train argc" not in proc.stdout  # the toolkit never started
    first = (base / "output" / "failure").read_text().splitlines()[0]
    assert first.startswith("HyperparameterError: ") and "hyperparameters.json" in first and "JSON object" in first
    assert (base / "output" / "previous-failure.txt").read_text() == "an earlier run's failure\n"
    # check-job runs the job's own checks: without data it fails as the job would
    (base / "input" / "config" / "hyperparameters.json").write_text('{"epoch": "1", "instruction_tuned": "True"}')
    proc = subprocess.run(["sh", str(REPO / "docker/entrypoint.sh"), "train"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "no training data channel" in proc.stderr and "train argc" not in proc.stdout
    (base / "input" / "data" / "train").mkdir(parents=True)
    (base / "input" / "data" / "train" / "rows.jsonl").write_text('{"prompt": "Hi?", "completion": "Hello."}\n')
    proc = subprocess.run(["sh", str(REPO / "docker/entrypoint.sh"), "train"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("train argc=0"), proc.stderr


def test_entry_serve_passes_its_arguments(fake_bin):
    proc, out, _ = run_entry("serve", "--workers", "2", path=fake_bin)
    assert proc.returncode == 0
    assert out.strip() == f"serve argc=2 args=--workers 2 ppid={os.getpid()}"


def test_entry_runs_other_commands_and_refuses_none(fake_bin):
    proc, out, _ = run_entry("echo", "hello", path=fake_bin)
    assert (proc.returncode, out) == (0, "hello\n")
    proc, _, err = run_entry(path=fake_bin)
    assert proc.returncode == 2 and "usage" in err


def test_entry_says_which_image_to_use(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc, _, err = run_entry("serve", path=empty)
    assert proc.returncode == 2 and "tuneforge-serve image" in err


# --- scripts/local-train.sh and scripts/local-serve.sh --------------------------------------------
def dry_run(script, *args, cwd, engine="podman"):
    result = subprocess.run(["bash", str(REPO / "scripts" / script), "--dry-run", *args], cwd=cwd,
                            capture_output=True, text=True, env=dict(os.environ, TUNEFORGE_ENGINE=engine))
    return result


def test_local_train_dry_run_lays_out_opt_ml(tmp_path):
    data, val, model = (tmp_path / n for n in ("data", "val", "base model"))
    for d in (data, val, model):
        d.mkdir()
    result = dry_run("local-train.sh", "--data", "data", "--validation", "val", "--model", "base model",
                     "--run-dir", "run", "--gpus", "epoch=1", "max_steps=5", "instruction_tuned=True",
                     "chat_template={{ messages }}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    config = run / "input" / "config"
    # every value a string, as SageMaker passes them; '=' inside a value survives
    assert json.loads((config / "hyperparameters.json").read_text()) == {
        "epoch": "1", "max_steps": "5", "instruction_tuned": "True", "chat_template": "{{ messages }}"}
    assert json.loads((config / "resourceconfig.json").read_text()) == {
        "current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
    assert set(json.loads((config / "inputdataconfig.json").read_text())) == {"training", "validation", "model"}
    for sub in ("model", "output", "checkpoints", "input/data/training", "input/data/model"):
        assert (run / sub).is_dir(), sub

    cmd = shlex.split(result.stdout)
    assert cmd[:3] == ["podman", "run", "--rm"]
    assert cmd[-2:] == ["tuneforge-train:local", "train"]
    mounts = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-v"]
    assert mounts == [f"{run}:/opt/ml", f"{data}:/opt/ml/input/data/training:ro",
                      f"{val}:/opt/ml/input/data/validation:ro", f"{model}:/opt/ml/input/data/model:ro"]
    assert cmd[cmd.index("--hostname") + 1] == "algo-1"
    assert cmd[cmd.index("--device") + 1] == "nvidia.com/gpu=all" and "--gpus" not in cmd  # podman: CDI


def test_local_scripts_ask_docker_for_gpus_its_own_way(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    for script, args in (("local-train.sh", ["--data", "data"]), ("local-serve.sh", ["--model", "model"])):
        result = dry_run(script, *args, "--gpus", cwd=tmp_path, engine="docker")
        assert result.returncode == 0, result.stderr
        cmd = shlex.split(result.stdout)
        assert cmd[0] == "docker" and cmd[cmd.index("--gpus") + 1] == "all" and "--device" not in cmd


def test_local_train_dry_run_minimal_and_errors(tmp_path):
    (tmp_path / "data").mkdir()
    result = dry_run("local-train.sh", "--data", "data", "--image", "my/img:1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cmd = shlex.split(result.stdout)
    assert cmd[-2:] == ["my/img:1", "train"] and "--gpus" not in cmd
    assert json.loads((tmp_path / "tuneforge-run/input/config/hyperparameters.json").read_text()) == {}
    assert set(json.loads((tmp_path / "tuneforge-run/input/config/inputdataconfig.json").read_text())) == {"training"}

    assert dry_run("local-train.sh", "epoch=1", cwd=tmp_path).returncode == 2              # no --data
    missing = dry_run("local-train.sh", "--data", "nope", cwd=tmp_path)
    assert missing.returncode == 2 and "not a folder" in missing.stderr
    assert dry_run("local-train.sh", "--data", "data", "epoch", cwd=tmp_path).returncode == 2  # not KEY=VALUE


def test_local_serve_dry_run(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    result = dry_run("local-serve.sh", "--model", "model", "--port", "9001", "SAGEMAKER_MODEL_SERVER_WORKERS=2",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cmd = shlex.split(result.stdout)
    assert cmd[:3] == ["podman", "run", "--rm"]
    assert cmd[cmd.index("-p") + 1] == "9001:8080"
    assert cmd[cmd.index("-v") + 1] == f"{model}:/opt/ml/model:ro"
    assert cmd[cmd.index("-e") + 1] == "SAGEMAKER_MODEL_SERVER_WORKERS=2"
    assert cmd[-2:] == ["tuneforge-serve:local", "serve"]
    assert dry_run("local-serve.sh", "--model", "model", "--port", "x", cwd=tmp_path).returncode == 2
    assert dry_run("local-serve.sh", cwd=tmp_path).returncode == 2


def test_build_images_help_and_bad_option():
    result = subprocess.run(["bash", str(REPO / "scripts/build-images.sh"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--base IMAGE" in result.stdout and "--no-smoke" in result.stdout
    bad = subprocess.run(["bash", str(REPO / "scripts/build-images.sh"), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr
