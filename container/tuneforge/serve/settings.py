"""Every serving setting: its environment variable, default and meaning, in one dataclass.

SageMaker configures model servers through SAGEMAKER_* variables; the rest are ours
(TUNEFORGE_*). `serve --port/--host/...` options override the environment for local runs.
docs/serving.md lists the same table; keep the two in step.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..contract import bind_port, serving_model_dir
from ..errors import UserError


@dataclass(frozen=True)
class ServeSettings:
    # Where the model is: TUNEFORGE_MODEL_DIR, else SM_MODEL_DIR, else <SAGEMAKER_BASE_DIR>/model.
    model_dir: Path = field(default_factory=serving_model_dir)
    # Bind address; SageMaker needs 0.0.0.0 inside the container, tests use 127.0.0.1.
    host: str = "0.0.0.0"
    # SAGEMAKER_BIND_TO_PORT (inference pipelines), else 8080.
    port: int = field(default_factory=bind_port)
    # SAGEMAKER_MODEL_SERVER_WORKERS: processes, each holding a full copy of the model.
    workers: int = 1
    # TUNEFORGE_THREADS: request threads per worker (the most requests one worker holds at once).
    threads: int = 64
    # SAGEMAKER_MODEL_SERVER_TIMEOUT: gunicorn kills a worker silent this long (s). The
    # heartbeat runs on the worker's main thread, so long generations do not trip it.
    timeout: int = 60
    # TUNEFORGE_GRACEFUL_TIMEOUT: on SIGTERM, in-flight requests get this long (s) to finish.
    # SageMaker sends SIGKILL 30 s after SIGTERM, so it stays below 30.
    graceful_timeout: int = 25
    # TUNEFORGE_REQUEST_DEADLINE: a non-streaming request that has not finished after this
    # many seconds (queue time included) gets 503, before SageMaker's 60 s cut-off does it.
    # Under Batch Transform (SAGEMAKER_BATCH=true), which waits 600 s, the default is 590.
    request_deadline: float = 55.0
    # TUNEFORGE_MAX_BATCH_SIZE: most sequences in one generate call; 1 turns batching off.
    max_batch_size: int = 16
    # TUNEFORGE_MAX_BATCH_WAIT_MS: how long the first request of a batch waits for company.
    max_batch_wait_ms: float = 5.0
    # TUNEFORGE_MAX_BATCH_TOKENS: bound on sequences x (longest prompt + most new tokens).
    max_batch_tokens: int = 65536
    # TUNEFORGE_MAX_QUEUE: waiting requests per worker before new ones get 429.
    max_queue: int = 128
    # SAGEMAKER_MAX_PAYLOAD_IN_MB or TUNEFORGE_MAX_BODY_MB: larger bodies get 413.
    max_body_mb: float = 6.0
    # TUNEFORGE_REQUEST_READ_TIMEOUT: a request (headers and body) must arrive within this many
    # seconds of its first byte, else 408; also bounds a stalled write to a client.
    request_read_timeout: float = 30.0
    # TUNEFORGE_MAX_INPUT_TOKENS: longest prompt accepted; default the model's context - 1.
    max_input_tokens: int | None = None
    # TUNEFORGE_MAX_NEW_TOKENS: largest max_new_tokens a request may ask for.
    max_new_tokens: int = 4096
    # TUNEFORGE_DEFAULT_MAX_NEW_TOKENS: when the request names none; default the model's
    # generation_config.max_new_tokens, else 256.
    default_max_new_tokens: int | None = None
    # TUNEFORGE_MAX_STOP_SEQUENCES: as TGI's MAX_STOP_SEQUENCES.
    max_stop_sequences: int = 4
    # TUNEFORGE_MAX_STOP_SEQUENCE_CHARS: longest stop sequence (each is matched after every token).
    max_stop_sequence_chars: int = 256
    # TUNEFORGE_MAX_RETURN_SEQUENCES: bound on n / num_return_sequences.
    max_return_sequences: int = 8
    # TUNEFORGE_MAX_CLIENT_BATCH: most prompts in one JSON request's list (JSON lines bodies,
    # Batch Transform's MULTI_RECORD, are not bounded: they run in waves).
    max_client_batch: int = 64
    # TUNEFORGE_TORCH_THREADS: intra-op CPU threads of each worker (unset: torch's default).
    torch_threads: int | None = None
    # TUNEFORGE_DEVICE: auto (cuda when present), cpu or cuda.
    device: str = "auto"
    # TUNEFORGE_DTYPE: auto (bf16/fp16 on GPU, fp32 on CPU), float32, bfloat16 or float16.
    dtype: str = "auto"
    # TUNEFORGE_BASE_MODEL_DIR: base weights for an adapter-only model directory.
    base_model_dir: Path | None = None
    # TUNEFORGE_TRUST_REMOTE_CODE: allow model code shipped with the weights (off by default).
    trust_remote_code: bool = False
    # TUNEFORGE_ALLOW_PICKLE: load *.bin (pickle) weights when no safetensors exist.
    allow_pickle: bool = False
    # SAGEMAKER_CONTAINER_LOG_LEVEL / TUNEFORGE_LOG_LEVEL: gunicorn and tuneforge log level.
    log_level: str = "info"
    # TUNEFORGE_ACCESS_LOG: where the one-line-per-request access log goes ("-" = stdout, "off").
    access_log: str = "-"

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def body_limit_message(self) -> str:
        return (f"the request body is larger than {self.max_body_mb:g} MB "
                "(SAGEMAKER_MAX_PAYLOAD_IN_MB / TUNEFORGE_MAX_BODY_MB)")

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "ServeSettings":
        env = os.environ if environ is None else environ
        values: dict = {}
        for name, var in ENV_NAMES.items():
            for key in var:
                if env.get(key, "") != "":
                    values[name] = _coerce(name, env[key], key)
                    break
        if "model_dir" not in values:
            values["model_dir"] = serving_model_dir()
        values.setdefault("port", 8080)  # SAGEMAKER_BIND_TO_PORT is read above, from `env`
        batch = env.get("SAGEMAKER_BATCH", "")
        if batch.strip() and _bool(batch.strip().strip('"'), "SAGEMAKER_BATCH", batch):
            values.setdefault("request_deadline", BATCH_DEADLINE_S)
        return cls(**values)

    def with_overrides(self, **overrides) -> "ServeSettings":
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


# Setting name -> environment variables read for it, first set one wins.
ENV_NAMES: dict[str, tuple[str, ...]] = {
    "model_dir": ("TUNEFORGE_MODEL_DIR",),
    "host": ("TUNEFORGE_HOST",),
    "port": ("SAGEMAKER_BIND_TO_PORT", "TUNEFORGE_PORT"),
    "workers": ("SAGEMAKER_MODEL_SERVER_WORKERS", "TUNEFORGE_WORKERS"),
    "threads": ("TUNEFORGE_THREADS",),
    "timeout": ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "TUNEFORGE_TIMEOUT"),
    "graceful_timeout": ("TUNEFORGE_GRACEFUL_TIMEOUT",),
    "request_deadline": ("TUNEFORGE_REQUEST_DEADLINE",),
    "max_batch_size": ("TUNEFORGE_MAX_BATCH_SIZE",),
    "max_batch_wait_ms": ("TUNEFORGE_MAX_BATCH_WAIT_MS",),
    "max_batch_tokens": ("TUNEFORGE_MAX_BATCH_TOKENS",),
    "max_queue": ("TUNEFORGE_MAX_QUEUE",),
    "max_body_mb": ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "TUNEFORGE_MAX_BODY_MB"),
    "request_read_timeout": ("TUNEFORGE_REQUEST_READ_TIMEOUT",),
    "max_input_tokens": ("TUNEFORGE_MAX_INPUT_TOKENS",),
    "max_new_tokens": ("TUNEFORGE_MAX_NEW_TOKENS",),
    "default_max_new_tokens": ("TUNEFORGE_DEFAULT_MAX_NEW_TOKENS",),
    "max_stop_sequences": ("TUNEFORGE_MAX_STOP_SEQUENCES",),
    "max_stop_sequence_chars": ("TUNEFORGE_MAX_STOP_SEQUENCE_CHARS",),
    "max_return_sequences": ("TUNEFORGE_MAX_RETURN_SEQUENCES",),
    "max_client_batch": ("TUNEFORGE_MAX_CLIENT_BATCH",),
    "torch_threads": ("TUNEFORGE_TORCH_THREADS",),
    "device": ("TUNEFORGE_DEVICE",),
    "dtype": ("TUNEFORGE_DTYPE",),
    "base_model_dir": ("TUNEFORGE_BASE_MODEL_DIR",),
    "trust_remote_code": ("TUNEFORGE_TRUST_REMOTE_CODE",),
    "allow_pickle": ("TUNEFORGE_ALLOW_PICKLE",),
    "log_level": ("TUNEFORGE_LOG_LEVEL", "SAGEMAKER_CONTAINER_LOG_LEVEL"),
    "access_log": ("TUNEFORGE_ACCESS_LOG",),
}

BATCH_DEADLINE_S = 590.0  # Batch Transform's default InvocationsTimeoutInSeconds is 600
_TYPES = {f.name: str(f.type) for f in fields(ServeSettings)}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
# Settings with a fixed set of values: accepted spelling -> value.
_CHOICES = {
    "dtype": {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16",
              "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"},
    "log_level": {"debug": "debug", "info": "info", "warning": "warning", "warn": "warning", "error": "error",
                  "critical": "critical", "10": "debug", "20": "info", "30": "warning", "40": "error",
                  "50": "critical"},
}
# Numbers whose range is not "positive": (lowest, highest), both inclusive.
_RANGES = {"port": (1, 65535), "max_batch_wait_ms": (0, 60_000)}


def _coerce(name: str, raw: str, var: str):
    """One environment value -> the setting's type; a UserError naming the variable, the value and
    what is allowed otherwise, so `serve` stops at start instead of a worker failing later."""
    kind = _TYPES[name]
    text = raw.strip().strip('"').strip()
    if "Path" in kind:
        return Path(text)
    if kind.startswith("bool"):
        return _bool(text, var, raw)
    if kind.startswith(("int", "float")):
        return _number(name, text, int if kind.startswith("int") else float, var, raw)
    if name in _CHOICES:
        value = _CHOICES[name].get(text.lower())
        if value is None:
            raise _invalid(var, raw, "one of " + ", ".join(dict.fromkeys(_CHOICES[name])))
        return value
    if name == "device":
        if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
            return text
        raise _invalid(var, raw, "auto, cpu, cuda or cuda:N (a GPU index)")
    if not text:
        raise _invalid(var, raw, "a non-empty value")
    return text


def _invalid(var: str, raw: str, allowed: str) -> UserError:
    return UserError(f"{var}={raw!r} is not a valid value", fix=f"set {var} to {allowed}")


def _bool(text: str, var: str, raw: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise _invalid(var, raw, "true or false")


def _number(name: str, text: str, kind, var: str, raw: str):
    low, high = _RANGES.get(name, (None, None))
    if kind is int:
        span = f"an integer from {low} to {high}" if low is not None else "a positive integer"
    else:
        span = f"a number from {low:g} to {high:g}" if low is not None else "a positive number"
    try:
        value = kind(text)
    except ValueError:
        raise _invalid(var, raw, span) from None
    if not math.isfinite(value) or (low is None and value <= 0) or \
            (low is not None and not low <= value <= high):
        raise _invalid(var, raw, span)
    return value
