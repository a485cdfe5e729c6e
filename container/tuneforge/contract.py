"""The SageMaker container contract: the only module that knows /opt/ml paths and SM_* names,
and the one place that reads environment variables: the training side's (`TrainEnv`), the
report's and the server's few outside serve/settings.py (which reads the serving settings).
tests/unit/test_code_shape.py fails on a read of os.environ, or an /opt/ml path, anywhere else.

Every path is derived from SAGEMAKER_BASE_DIR (default /opt/ml), which is also what the
sagemaker-training toolkit honours, so `train` and `tuneforge train --base-dir` see one tree.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .hyperparameters import Flag

DEFAULT_BASE_DIR = "/opt/ml"
BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
TRAIN_CHANNELS = ("train", "training")
VALIDATION_CHANNEL = "validation"
MODEL_CHANNEL = "model"
BASE_MODEL_CHANNEL = "base_model"  # the base of an adapter-only fine-tune given as `model` (adapter_base.py)
CONFIG_CHANNEL = "config"
EVALUATION_CHANNEL = "evaluation"  # task files scored before and after training (docs/evaluation.md)


def env(name: str, default=None, doc: str = ""):
    return Field(default, validation_alias=name, description=doc)


class TrainEnv(BaseSettings):
    """Every environment variable the training side reads: name, type, default and meaning.

    Read afresh by `train_env()` at each use (the launcher sets some for its children). Unset or
    empty means the default; true/false ones take config.TRUE_WORDS / FALSE_WORDS."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore", frozen=True)

    base_dir: Path = env(BASE_DIR_ENV, Path(DEFAULT_BASE_DIR), "Root of the /opt/ml tree.")
    # torchrun's, set for each rank
    rank: int = env("RANK", 0, "Global rank of this process.")
    local_rank: int = env("LOCAL_RANK", 0, "Rank of this process on its host.")
    world_size: int = env("WORLD_SIZE", 1, "Processes in the job.")
    local_world_size: int | None = env("LOCAL_WORLD_SIZE", None, "Processes on this host (unset: WORLD_SIZE).")
    # the launcher's
    nproc_per_node: int | None = env("TUNEFORGE_NPROC_PER_NODE", None, "Processes per host; unset: one per GPU.")
    master_addr: str | None = env("TUNEFORGE_MASTER_ADDR", None, "Rendezvous address; unset: the first host.")
    master_port: int | None = env("TUNEFORGE_MASTER_PORT", None, "Rendezvous port; unset: the launcher's default.")
    dns_timeout_s: float = env("TUNEFORGE_DNS_TIMEOUT", 300.0, "How long to wait for the other hosts' names.")
    shutdown_timeout_s: int | None = env("TUNEFORGE_SHUTDOWN_TIMEOUT", None,
                                         "Seconds ranks get to stop after SIGTERM; unset: the launcher's default.")
    log_level: str = env("TUNEFORGE_LOG_LEVEL", "INFO", "Python logging level.")
    agent_pid: int | None = env("TUNEFORGE_AGENT_PID", None, "The torchrun agent a rank dies with.")
    rank_failures: str | None = env("TUNEFORGE_RANK_FAILURES", None, "File torchrun's per-rank failures go to.")
    job_config: Path | None = env("TUNEFORGE_JOB_CONFIG", None,
                                  "The hyperparameters the launcher parsed, for the processes it starts.")
    # limits and switches
    peak_tflops: float | None = env("TUNEFORGE_PEAK_TFLOPS", None, "Dense peak of one GPU for MFU; unset: known GPUs.")
    max_archive_gb: float | None = env("TUNEFORGE_MAX_ARCHIVE_GB", None, "Largest unpacked model archive.")
    allow_cpu_quantization: Flag = env("TUNEFORGE_ALLOW_CPU_QUANTIZATION", False,
                                       "Run int8/4-bit bases on CPU (slow; for tests).")
    skip_preflight: Flag = env("TUNEFORGE_SKIP_PREFLIGHT", False, "Skip the GPU memory estimate before loading.")
    tiny_cache: Path | None = env("TUNEFORGE_TINY_CACHE", None, "Where the tiny test models are built.")
    # experiment trackers (docs/trackers.md)
    mlflow_tracking_uri: str | None = env("MLFLOW_TRACKING_URI", None,
                                          "MLflow server (http(s)://, file:, a SageMaker MLflow ARN); unset: no MLflow.")
    mlflow_experiment_name: str = env("MLFLOW_EXPERIMENT_NAME", "tuneforge", "MLflow experiment the job's run goes to.")
    mlflow_run_name: str | None = env("MLFLOW_RUN_NAME", None, "MLflow run name; unset: the training job's name.")
    training_job_name: str | None = env("TRAINING_JOB_NAME", None, "The SageMaker training job's name.")
    sm_training_env: str | None = env("SM_TRAINING_ENV", None, "The sagemaker-training toolkit's JSON (job_name).")

    def job_name(self) -> str | None:
        """The training job's name: TRAINING_JOB_NAME, else SM_TRAINING_ENV's job_name."""
        if self.training_job_name:
            return self.training_job_name
        try:
            return json.loads(self.sm_training_env or "{}").get("job_name") or None
        except (ValueError, AttributeError):
            return None


def train_env(environ: dict | None = None) -> TrainEnv:
    """The training environment now (os.environ, or `environ`); a UserError names a bad variable."""
    from .errors import UserError

    try:
        if environ is None:
            return TrainEnv()
        return TrainEnv.model_validate({k: v for k, v in environ.items() if v != ""})
    except ValidationError as exc:
        error = exc.errors()[0]
        name = error["loc"][0] if error["loc"] else "?"
        raise UserError(f"{error.get('input')!r} is not valid ({error['msg']})", where=f"environment variable {name}",
                        fix=f"set {name} to a valid value or unset it") from None


def started_by_torchrun() -> bool:
    """Whether torchrun started this process (it sets LOCAL_RANK, even to 0)."""
    return "LOCAL_RANK" in os.environ


@dataclass(frozen=True)
class Paths:
    base: Path

    @classmethod
    def from_env(cls, base_dir: str | os.PathLike | None = None) -> "Paths":
        return cls(Path(base_dir) if base_dir else train_env().base_dir)

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
        """`train` (Mistral/Falcon notebooks) or `training` (Llama/Flan-T5/Gemma notebooks), not both."""
        found = [self.channel(name) for name in TRAIN_CHANNELS if self.channel(name).is_dir()]
        if len(found) > 1:
            from .errors import DataError

            raise DataError("two training channels, `train` and `training`, are both present and only one is "
                            "read", where=str(self.data_dir),
                            fix="put all training data in one channel (`train` or `training`) and remove the "
                                "other; data to validate on goes in `validation`")
        return found[0] if found else None

    def validation_channel(self) -> Path | None:
        path = self.channel(VALIDATION_CHANNEL)
        return path if path.is_dir() else None

    def model_channel(self) -> Path | None:
        path = self.channel(MODEL_CHANNEL)
        return path if path.is_dir() and any(path.iterdir()) else None

    def base_model_channel(self) -> Path | None:
        path = self.channel(BASE_MODEL_CHANNEL)
        return path if path.is_dir() else None

    def evaluation_channel(self) -> Path | None:
        path = self.channel(EVALUATION_CHANNEL)
        return path if path.is_dir() else None

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
    def tensorboard_dir(self) -> Path:
        """Where SageMaker's TensorBoardOutputConfig (default LocalPath) syncs event files from."""
        return self.output_dir / "tensorboard"

    @property
    def checkpoint_dir(self) -> Path:
        return self.base / "checkpoints"

    @property
    def extracted_model_dir(self) -> Path:
        """Where a base-model archive is unpacked: the job's own volume (on SageMaker the ML storage
        volume; /tmp is the small root volume), outside model/ and output/, removed after the job."""
        return self.base / ".tuneforge-base-model"

    @property
    def previous_failure_file(self) -> Path:
        return self.output_dir / "previous-failure.txt"

    def parsed_config_file(self, owner: str) -> Path:
        """Where the launcher `owner` leaves the parsed hyperparameters for its children
        (job/job_config.py); outside model/ and output/, removed when they are done."""
        return self.base / ".tuneforge-config" / f"{owner}.json"

    def read_hyperparameters(self) -> dict[str, str]:
        from .errors import HyperparameterError

        return _read_json(self.hyperparameters_file, HyperparameterError,
                          'of names to string values, e.g. {"epoch": "3", "learning_rate": "0.0001"}')

    def read_resource_config(self) -> dict:
        from .errors import ResourceError

        return _read_json(self.resource_config_file, ResourceError,
                          'such as {"current_host": "algo-1", "hosts": ["algo-1"]}')

    def ensure_output_dirs(self) -> None:
        """Create output/data, model/ and checkpoints/, proving each can be written (output/ first: the
        failure file goes there); ResourceError naming the folder and the fix otherwise."""
        for path in (self.output_dir, self.output_data_dir, self.model_dir, self.checkpoint_dir):
            _ensure_writable(path)


def _read_json(path: Path, error: type, shape: str) -> dict:
    """A JSON object, or {} for a missing or empty file; `error` (a UserError kind) otherwise."""
    if not path.exists():
        return {}
    text = path.read_text()
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"not valid JSON (line {exc.lineno}: {exc.msg})", where=str(path),
                    fix=f"write the file as one JSON object {shape}") from exc
    if not isinstance(value, dict):
        kind = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
        raise error(f"must be a JSON object, but it holds {kind} ({text.strip()[:40]})", where=str(path),
                    fix=f"write the file as one JSON object {shape}")
    return value


def _ensure_writable(folder: Path) -> None:
    """mkdir -p, then write and remove a probe file: a real test, which holds for root too."""
    from .errors import ResourceError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".tuneforge-write-test-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            why, fix = (f"{blocker} is a file, not a folder",
                        f"move that file away so that {folder} can be a folder (or mount a writable folder there)")
        else:
            why, fix = (f"cannot be written ({exc.strerror or exc})",
                        f"make it writable by this user (uid {os.getuid()}): mount a writable volume at {folder} "
                        f"(docker run -v HOST_FOLDER:{folder}) or chown/chmod the host folder")
        raise ResourceError(f"the job cannot write its outputs here: {why}", where=str(folder), fix=fix) from exc


def archive_failure(paths: Paths) -> Path | None:
    """Move an earlier run's output/failure to output/previous-failure.txt (replacing an older one), so
    that a run that succeeds leaves no failure file. Call once, at the start of a run; None if there was
    none or it cannot be moved (an unwritable output/ is reported by ensure_output_dirs)."""
    if not paths.failure_file.is_file():
        return None
    try:
        paths.failure_file.replace(paths.previous_failure_file)
    except OSError:
        return None
    return paths.previous_failure_file


def write_failure(paths: Paths, text: str) -> bool:
    """Write output/failure unless one exists (within a run, a rank may have written it first).

    The first 1024 characters become the job's FailureReason, so the actionable line goes first.
    Where output/ cannot be written, the text goes to stderr instead (and False is returned).
    """
    text = text if text.endswith("\n") else text + "\n"
    try:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        with open(paths.failure_file, "x") as handle:
            handle.write(text)
        return True
    except OSError as exc:
        if isinstance(exc, FileExistsError) and paths.failure_file.is_file():
            return False
        sys.stderr.write(f"tuneforge: cannot write {paths.failure_file} ({exc}); the failure was:\n{text}")
        sys.stderr.flush()
        return False


def serving_model_dir() -> Path:
    """Where the endpoint finds the model: SM_MODEL_DIR, else <base>/model."""
    if os.environ.get("SM_MODEL_DIR"):
        return Path(os.environ["SM_MODEL_DIR"])
    return Paths.from_env().model_dir


def bind_port() -> int:
    return int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))


# the text-to-image server's bounds on one request (serve/image_payloads.Limits parses them)
IMAGE_LIMIT_VARIABLES = {"max_side": "TUNEFORGE_MAX_IMAGE_SIDE", "max_images": "TUNEFORGE_MAX_IMAGES",
                         "max_steps": "TUNEFORGE_MAX_INFERENCE_STEPS", "max_response_mb": "TUNEFORGE_MAX_RESPONSE_MB"}
PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def image_limit_texts() -> dict[str, str]:
    """Limits field -> the variable's text, stripped ("" where unset)."""
    return {field: os.environ.get(var, "").strip() for field, var in IMAGE_LIMIT_VARIABLES.items()}


def prometheus_multiproc_dir() -> str | None:
    """The folder gunicorn's workers write their metric files to (serve/metrics.py sets it); None if unset."""
    return os.environ.get(PROMETHEUS_MULTIPROC_DIR) or None


# SageMaker MetricDefinitions for the lines the training job prints (README.md lists them).
SFT_METRIC_DEFINITIONS = [
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
    {"Name": "final:exact_match", "Regex": r"\[metric\] final_exact_match=([0-9.]+)"},
    # JumpStart's own definitions for its Llama fine-tuning keep working:
    {"Name": "huggingface-textgeneration:eval-loss", "Regex": r"eval_epoch_loss=tensor\(([0-9\.]+)"},
    {"Name": "huggingface-textgeneration:eval-ppl", "Regex": r"eval_ppl=tensor\(([0-9\.]+)"},
]
# preference methods (training_method=dpo|orpo|simpo|kto, docs/preference.md); margins and
# log-probabilities may be negative
PREFERENCE_METRIC_DEFINITIONS = [
    {"Name": "train:reward_accuracy", "Regex": r"\[metric\] train_reward_accuracy=([0-9.]+)"},
    {"Name": "train:reward_margin", "Regex": r"\[metric\] reward_margin=(-?[0-9.]+)"},
    {"Name": "train:chosen_logps", "Regex": r"\[metric\] train_chosen_logps=(-?[0-9.]+)"},
    {"Name": "train:rejected_logps", "Regex": r"\[metric\] train_rejected_logps=(-?[0-9.]+)"},
    {"Name": "validation:reward_accuracy", "Regex": r"\[metric\] eval_reward_accuracy=([0-9.]+)"},
    {"Name": "validation:reward_margin", "Regex": r"\[metric\] eval_reward_margin=(-?[0-9.]+)"},
    {"Name": "final:reward_accuracy", "Regex": r"\[metric\] final_reward_accuracy=([0-9.]+)"},
    {"Name": "final:reward_margin", "Regex": r"\[metric\] final_reward_margin=(-?[0-9.]+)"},
    {"Name": "final:chosen_logps", "Regex": r"\[metric\] final_chosen_logps=(-?[0-9.]+)"},
    {"Name": "final:rejected_logps", "Regex": r"\[metric\] final_rejected_logps=(-?[0-9.]+)"},
]

METRIC_DEFINITIONS = SFT_METRIC_DEFINITIONS + PREFERENCE_METRIC_DEFINITIONS


def metric_definitions(method: str | None = None) -> list[dict]:
    """The fixed definitions for a job of this training_method (None: every method's): a preference
    job prints the reward lines besides the loss and ROUGE ones; an SFT job never prints those."""
    return SFT_METRIC_DEFINITIONS if method == "sft" else METRIC_DEFINITIONS


# SageMaker allows 40 MetricDefinitions per training job.
SAGEMAKER_MAX_METRIC_DEFINITIONS = 40


def task_metric_definitions(task_names) -> list[dict]:
    """MetricDefinitions for the evaluation tasks' lines, `[metric] base_eval_<task>=<score>` (before
    training) and `[metric] final_eval_<task>=<score>` (after); task names are the user's file names."""
    import re

    return [{"Name": f"{stage}:eval_{name}", "Regex": rf"\[metric\] {stage}_eval_{re.escape(name)}=(-?[0-9.]+)"}
            for name in task_names for stage in ("base", "final")]
