"""Shared fixtures: tiny models (built once into .cache/tiny-models) and /opt/ml-shaped job trees.

Test lanes: every test under tests/e2e and tests/distributed runs a job, so it is marked slow here;
`make test-fast` runs the rest (-m 'not slow'), `make test` runs everything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


SLOW_FOLDERS = ("e2e", "distributed")  # under tests/: every test there runs a training job or several


def pytest_collection_modifyitems(config, items):
    tests = REPO / "tests"
    for item in items:
        path = Path(str(item.path))
        if path.is_relative_to(tests) and path.relative_to(tests).parts[0] in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny():
    """tiny(family) -> path of the cached tiny random model of that family."""
    from tuneforge.tiny import tiny_model

    return tiny_model


class Job:
    """An /opt/ml tree in a temporary folder."""

    def __init__(self, base: Path):
        self.base = base
        (base / "input" / "config").mkdir(parents=True, exist_ok=True)
        (base / "input" / "data").mkdir(parents=True, exist_ok=True)

    def channel(self, name: str) -> Path:
        path = self.base / "input" / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_model(self, source: Path) -> Path:
        target = self.base / "input" / "data" / "model"
        shutil.copytree(source, target, dirs_exist_ok=True)
        return target

    def add_sample_data(self, kind: str, *, train: str = "train", validation: bool = True, **sizes) -> None:
        from tuneforge.samples import write_sample_data

        staged = write_sample_data(kind, self.base / "staging", **sizes)
        shutil.move(str(staged["train"]), self.base / "input" / "data" / train)
        if validation:
            shutil.move(str(staged["validation"]), self.base / "input" / "data" / "validation")
        shutil.rmtree(self.base / "staging")

    def hyperparameters(self, values: dict) -> None:
        (self.base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(values))

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def failure(self) -> Path:
        return self.base / "output" / "failure"

    def failure_first_line(self) -> str:
        return self.failure.read_text().splitlines()[0]

    def metrics(self) -> dict:
        return json.loads((self.base / "output" / "data" / "metrics.json").read_text())

    def run_in_process(self) -> int:
        from tuneforge.recipes import run

        return run(self.base)

    def run_cli(self, *extra_env, timeout: int = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.pop("SAGEMAKER_BASE_DIR", None)
        return subprocess.run([sys.executable, "-m", "tuneforge.cli", "train", "--base-dir", str(self.base)],
                              capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def job(tmp_path, monkeypatch):
    monkeypatch.delenv("SAGEMAKER_BASE_DIR", raising=False)
    yield Job(tmp_path / "opt" / "ml")
    os.environ.pop("SAGEMAKER_BASE_DIR", None)
