"""Every serving setting: its environment variables, default, bounds and meaning, declared once.

SageMaker configures model servers through SAGEMAKER_* variables; the rest are ours
(TUNEFORGE_*). Each field lists the variables read for it, first set one wins; empty ones are
ignored. `serve --port/--host/...` options override the environment for local runs
(`with_overrides`). A bad value stops `serve` at start with a UserError naming the variable, the
value and what is allowed. docs/serving.md lists the same table; keep the two in step.
With contract.py, the one module that reads the environment (tests/unit/test_code_shape.py).
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from ..config import FALSE_WORDS, TRUE_WORDS, Flag
from ..contract import serving_model_dir
from ..errors import UserError

BATCH_DEADLINE_S = 590.0  # Batch Transform's default InvocationsTimeoutInSeconds is 600
DTYPES = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16",
          "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
LOG_LEVELS = {"debug": "debug", "info": "info", "warning": "warning", "warn": "warning", "error": "error",
              "critical": "critical", "10": "debug", "20": "info", "30": "warning", "40": "error", "50": "critical"}
_environ: ContextVar[dict | None] = ContextVar("serve_environ", default=None)


def env(default, *variables: str, doc: str, **bounds):
    """A field read from `variables` (first set wins); `default` may be a factory."""
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return Field(**factory, validation_alias=AliasChoices(*variables), description=doc,
                 json_schema_extra={"env": list(variables)}, **bounds)


POSITIVE = {"gt": 0, "allow_inf_nan": False}
POSITIVE_INT = {"gt": 0}


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, env_ignore_empty=True, extra="ignore",
                                      populate_by_name=True, protected_namespaces=())

    model_dir: Path = env(serving_model_dir, "TUNEFORGE_MODEL_DIR", doc="the model folder; else SM_MODEL_DIR, "
                          "else <SAGEMAKER_BASE_DIR>/model")
    host: str = env("0.0.0.0", "TUNEFORGE_HOST", doc="bind address; SageMaker needs 0.0.0.0", min_length=1)
    port: int = env(8080, "SAGEMAKER_BIND_TO_PORT", "TUNEFORGE_PORT", doc="port", ge=1, le=65535)
    workers: int = env(1, "SAGEMAKER_MODEL_SERVER_WORKERS", "TUNEFORGE_WORKERS",
                       doc="processes, each holding a full copy of the model", **POSITIVE_INT)
    threads: int = env(64, "TUNEFORGE_THREADS", doc="request threads per worker", **POSITIVE_INT)
    timeout: int = env(60, "SAGEMAKER_MODEL_SERVER_TIMEOUT", "TUNEFORGE_TIMEOUT",
                       doc="gunicorn kills a worker silent this long (s)", **POSITIVE_INT)
    graceful_timeout: int = env(25, "TUNEFORGE_GRACEFUL_TIMEOUT", doc="on SIGTERM, in-flight requests get "
                                "this long (s); SageMaker sends SIGKILL 30 s after SIGTERM", **POSITIVE_INT)
    request_deadline: float = env(55.0, "TUNEFORGE_REQUEST_DEADLINE", doc="a non-streaming request not done "
                                  f"after this many s gets 503 ({BATCH_DEADLINE_S:g} under Batch Transform)",
                                  **POSITIVE)
    batch_transform: Flag = env(False, "SAGEMAKER_BATCH", doc="set by SageMaker Batch Transform")
    max_batch_size: int = env(16, "TUNEFORGE_MAX_BATCH_SIZE", doc="sequences per generate call; 1 = no "
                              "batching", **POSITIVE_INT)
    max_batch_wait_ms: float = env(5.0, "TUNEFORGE_MAX_BATCH_WAIT_MS", doc="how long a batch's first request "
                                   "waits for company", ge=0, le=60_000, allow_inf_nan=False)
    max_batch_tokens: int = env(65536, "TUNEFORGE_MAX_BATCH_TOKENS", doc="bound on sequences x (longest prompt "
                                "+ most new tokens)", **POSITIVE_INT)
    batch_slice_s: float = env(2.0, "TUNEFORGE_BATCH_SLICE_S", doc="a generate call that has run this long "
                               "while other requests wait yields to them; its unfinished sequences go on in a "
                               "later call (fair to short requests; 0 = never yield)", ge=0, le=3600,
                               allow_inf_nan=False)
    max_queue: int = env(128, "TUNEFORGE_MAX_QUEUE", doc="waiting requests per worker before 429", **POSITIVE_INT)
    max_body_mb: float = env(6.0, "SAGEMAKER_MAX_PAYLOAD_IN_MB", "TUNEFORGE_MAX_BODY_MB",
                             doc="larger bodies get 413", **POSITIVE)
    request_read_timeout: float = env(30.0, "TUNEFORGE_REQUEST_READ_TIMEOUT", doc="seconds a request may take "
                                      "to arrive (else 408)", **POSITIVE)
    max_input_tokens: int | None = env(None, "TUNEFORGE_MAX_INPUT_TOKENS", doc="longest prompt; default the "
                                       "model's context - 1", **POSITIVE_INT)
    max_new_tokens: int = env(4096, "TUNEFORGE_MAX_NEW_TOKENS", doc="largest max_new_tokens a request may ask",
                              **POSITIVE_INT)
    default_max_new_tokens: int | None = env(None, "TUNEFORGE_DEFAULT_MAX_NEW_TOKENS", doc="when a request "
                                             "names none; default generation_config's, else 256", **POSITIVE_INT)
    max_stop_sequences: int = env(32, "TUNEFORGE_MAX_STOP_SEQUENCES", doc="stop sequences per request (TGI "
                                  "allows 4; evaluation harnesses send 5 or more)", **POSITIVE_INT)
    max_stop_sequence_chars: int = env(256, "TUNEFORGE_MAX_STOP_SEQUENCE_CHARS", doc="longest stop sequence",
                                       **POSITIVE_INT)
    max_return_sequences: int = env(8, "TUNEFORGE_MAX_RETURN_SEQUENCES", doc="bound on n / "
                                    "num_return_sequences", **POSITIVE_INT)
    max_client_batch: int = env(64, "TUNEFORGE_MAX_CLIENT_BATCH", doc="prompts in one JSON request's list",
                                **POSITIVE_INT)
    torch_threads: int | None = env(None, "TUNEFORGE_TORCH_THREADS", doc="intra-op CPU threads per worker",
                                    **POSITIVE_INT)
    device: str = env("auto", "TUNEFORGE_DEVICE", doc="auto (cuda when present), cpu, cuda or cuda:N",
                      pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = env("auto", "TUNEFORGE_DTYPE", doc="weights' "
                                                                   "dtype; auto: bf16/fp16 on GPU, fp32 on CPU")
    base_model_dir: Path | None = env(None, "TUNEFORGE_BASE_MODEL_DIR", doc="base weights for an adapter-only "
                                      "folder")
    trust_remote_code: Flag = env(False, "TUNEFORGE_TRUST_REMOTE_CODE", doc="run model code shipped with the "
                                  "weights")
    allow_pickle: Flag = env(False, "TUNEFORGE_ALLOW_PICKLE", doc="load *.bin weights when no safetensors exist")
    serving_engine: Literal["auto", "vllm", "transformers"] = env(
        "auto", "SERVING_ENGINE", "TUNEFORGE_SERVING_ENGINE", doc="what generates: vllm (one engine process per "
        "instance), transformers (a batching engine in each worker) or auto (vLLM where it can serve the model)")
    vllm_python: Path | None = env(None, "TUNEFORGE_VLLM_PYTHON", doc="the Python of vLLM's own virtual "
                                   "environment; default /opt/vllm/bin/python, else <this venv>/vllm/bin/python")
    kv_cache_gb: int | None = env(None, "TUNEFORGE_KV_CACHE_GB", doc="vLLM's KV cache on CPU, whole GiB; default "
                                  "a quarter of the machine's memory less the weights (1 to 64)", **POSITIVE_INT)
    gpu_memory_utilization: float = env(0.9, "TUNEFORGE_GPU_MEMORY_UTILIZATION", doc="share of each GPU's "
                                        "memory vLLM may use (weights + KV cache)", gt=0, le=1)
    vllm_args: str = env("", "TUNEFORGE_VLLM_ARGS", doc="more arguments for vLLM's server (e.g. "
                         "--pipeline-parallel-size 2); tuneforge sets model, port, dtype, length and parallelism")
    vllm_start_timeout: float = env(1200.0, "TUNEFORGE_VLLM_START_TIMEOUT", doc="seconds vLLM may take to load "
                                    "before the server gives up", **POSITIVE)
    vllm_url: str | None = env(None, "TUNEFORGE_VLLM_URL", doc="set by `serve` for its workers: where the "
                               "instance's vLLM engine listens (loopback)")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = env(
        "info", "TUNEFORGE_LOG_LEVEL", "SAGEMAKER_CONTAINER_LOG_LEVEL", doc="gunicorn and tuneforge log level")
    access_log: str = env("-", "TUNEFORGE_ACCESS_LOG", doc='access log destination ("-" = stdout, "off")',
                          min_length=1)

    @field_validator("*", mode="before")
    @classmethod
    def _unquote(cls, value):
        """Environment values may arrive JSON-quoted ('"5"'), as SageMaker writes them."""
        return value.strip().strip('"').strip() if isinstance(value, str) else value

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value):
        return DTYPES.get(value.lower(), value) if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value):
        return LOG_LEVELS.get(value.lower(), value) if isinstance(value, str) else value

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def body_limit_message(self) -> str:
        return (f"the request body is larger than {self.max_body_mb:g} MB "
                "(SAGEMAKER_MAX_PAYLOAD_IN_MB / TUNEFORGE_MAX_BODY_MB)")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        """Keyword arguments, then the environment only when read through `from_env`."""
        environ = _environ.get()
        return (init_settings,) if environ is None else (init_settings, _MappingSource(settings_cls, environ))

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "ServeSettings":
        environ = dict(os.environ if environ is None else environ)
        token = _environ.set(environ)
        try:
            settings = cls()
        except ValidationError as exc:
            raise _user_error(exc, environ) from None
        finally:
            _environ.reset(token)
        if settings.batch_transform and "request_deadline" not in settings.model_fields_set:
            settings = settings.model_copy(update={"request_deadline": BATCH_DEADLINE_S})
        return settings

    def with_overrides(self, **overrides) -> "ServeSettings":
        return self.model_copy(update={k: v for k, v in overrides.items() if v is not None})


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ."""

    def __init__(self, settings_cls, environ: dict):
        self._mapping = environ
        super().__init__(settings_cls, case_sensitive=True, env_ignore_empty=True)

    def _load_env_vars(self):
        return {k: v for k, v in self._mapping.items() if v != ""}


def variables(name: str) -> list[str]:
    return ServeSettings.model_fields[name].json_schema_extra["env"]


def _user_error(exc: ValidationError, environ: dict) -> UserError:
    """The first problem as `VAR='value' is not a valid value. Fix: set VAR to <allowed>`."""
    error = exc.errors()[0]
    name = next((n for n, f in ServeSettings.model_fields.items()
                 if error["loc"] and (error["loc"][0] == n or error["loc"][0] in variables(n))), None)
    if name is None:
        return UserError(f"a serving setting is not valid: {error['msg']}", fix="check the TUNEFORGE_* variables")
    var = next((v for v in variables(name) if environ.get(v, "") != ""), variables(name)[0])
    raw = environ.get(var, "")
    return UserError(f"{var}={raw!r} is not a valid value", fix=f"set {var} to {_allowed(name)}")


def _allowed(name: str) -> str:
    """What a setting takes, in words, from its declaration."""
    if name == "dtype":
        return "one of " + ", ".join(DTYPES)
    if name == "log_level":
        return "one of " + ", ".join(LOG_LEVELS)
    if name == "serving_engine":
        return "auto, vllm or transformers"
    if name == "device":
        return "auto, cpu, cuda or cuda:N (a GPU index)"
    field = ServeSettings.model_fields[name]
    kind = field.annotation
    if kind is bool:  # the words training's true/false hyperparameters and variables take
        return f"true or false ({', '.join(sorted(TRUE_WORDS))} / {', '.join(sorted(FALSE_WORDS))})"
    if kind in (str, Path):
        return "a non-empty value"
    low = next((getattr(m, "ge", None) for m in field.metadata if getattr(m, "ge", None) is not None), None)
    high = next((getattr(m, "le", None) for m in field.metadata if getattr(m, "le", None) is not None), None)
    integer = kind in (int, int | None)
    if low is not None and high is not None:
        return f"an integer from {low} to {high}" if integer else f"a number from {low:g} to {high:g}"
    return "a positive integer" if integer else "a positive number"
