"""The SageMaker container contract: the only module that knows /opt/ml paths and SM_* names.

Every path is derived from SAGEMAKER_BASE_DIR (default /opt/ml), which is also what the
sagemaker-training toolkit honours, so `train` and `tuneforge train --base-dir` see one tree.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_DIR = "/opt/ml"
BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
TRAIN_CHANNELS = ("train", "training")
VALIDATION_CHANNEL = "validation"
MODEL_CHANNEL = "model"
CONFIG_CHANNEL = "config"
METADATA_FILE = "tuneforge.json"


@dataclass(frozen=True)
class Paths:
    base: Path

    @classmethod
    def from_env(cls, base_dir: str | os.PathLike | None = None) -> "Paths":
        return cls(Path(base_dir or os.environ.get(BASE_DIR_ENV) or DEFAULT_BASE_DIR))

    # input/config
    @property
    def config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def hyperparameters_file(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def resource_config_file(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def input_data_config_file(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    # input/data
    @property
    def data_dir(self) -> Path:
        return self.base / "input" / "data"

    def channel(self, name: str) -> Path:
        return self.data_dir / name

    def train_channel(self) -> Path | None:
        """`train` (Mistral/Falcon notebooks) or `training` (Llama/Flan-T5/Gemma notebooks)."""
        for name in TRAIN_CHANNELS:
            if self.channel(name).is_dir():
                return self.channel(name)
        return None

    def validation_channel(self) -> Path | None:
        path = self.channel(VALIDATION_CHANNEL)
        return path if path.is_dir() else None

    def model_channel(self) -> Path | None:
        path = self.channel(MODEL_CHANNEL)
        return path if path.is_dir() and any(path.iterdir()) else None

    def config_channel(self) -> Path | None:
        path = self.channel(CONFIG_CHANNEL)
        return path if path.is_dir() else None

    # outputs
    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        return self.base / "checkpoints"

    @property
    def extracted_model_dir(self) -> Path:
        """Where a base-model archive is unpacked: the job's own volume (on SageMaker the ML storage
        volume; /tmp is the small root volume), outside model/ and output/, removed after the job."""
        return self.base / ".tuneforge-base-model"

    def read_hyperparameters(self) -> dict[str, str]:
        return _read_json(self.hyperparameters_file, default={})

    def read_resource_config(self) -> dict:
        return _read_json(self.resource_config_file, default={})

    def ensure_output_dirs(self) -> None:
        for path in (self.model_dir, self.output_data_dir, self.checkpoint_dir):
            path.mkdir(parents=True, exist_ok=True)


def _read_json(path: Path, default):
    if not path.exists():
        return default
    from .errors import UserError

    try:
        return json.loads(path.read_text() or "null") or default
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON (line {exc.lineno}: {exc.msg})", where=str(path),
                        fix="write the file as a JSON object") from exc


def write_failure(paths: Paths, text: str) -> bool:
    """Write output/failure unless one exists (a rank or the user may have written it first).

    The first 1024 characters become the job's FailureReason, so the actionable line goes first.
    """
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(paths.failure_file, "x") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")
        return True
    except FileExistsError:
        return False


def serving_model_dir() -> Path:
    """Where the endpoint finds the model: SM_MODEL_DIR, else <base>/model."""
    if os.environ.get("SM_MODEL_DIR"):
        return Path(os.environ["SM_MODEL_DIR"])
    return Paths.from_env().model_dir


def bind_port() -> int:
    return int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))


# SageMaker MetricDefinitions for the lines the training job prints (README.md lists them).
METRIC_DEFINITIONS = [
    {"Name": "train:loss", "Regex": r"\[metric\] train_loss=([0-9.]+)"},
    {"Name": "validation:loss", "Regex": r"\[metric\] eval_loss=([0-9.]+)"},
    {"Name": "validation:perplexity", "Regex": r"\[metric\] eval_perplexity=([0-9.]+)"},
    {"Name": "final:train_loss", "Regex": r"\[metric\] final_train_loss=([0-9.]+)"},
    {"Name": "final:validation_loss", "Regex": r"\[metric\] final_eval_loss=([0-9.]+)"},
    {"Name": "final:perplexity", "Regex": r"\[metric\] final_perplexity=([0-9.]+)"},
    {"Name": "final:rouge1", "Regex": r"\[metric\] final_rouge1=([0-9.]+)"},
    {"Name": "final:rouge2", "Regex": r"\[metric\] final_rouge2=([0-9.]+)"},
    {"Name": "final:rougeL", "Regex": r"\[metric\] final_rougeL=([0-9.]+)"},
    {"Name": "final:rougeLsum", "Regex": r"\[metric\] final_rougeLsum=([0-9.]+)"},
    # JumpStart's own definitions for its Llama fine-tuning keep working:
    {"Name": "huggingface-textgeneration:eval-loss", "Regex": r"eval_epoch_loss=tensor\(([0-9\.]+)"},
    {"Name": "huggingface-textgeneration:eval-ppl", "Regex": r"eval_ppl=tensor\(([0-9\.]+)"},
]
