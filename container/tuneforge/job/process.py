"""What every tuneforge training process does for itself, the launcher and each torchrun rank alike:
logging set-up, the failure text, and dying with its parent."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import traceback

from ..contract import train_env
from ..errors import UserError
from ..logs import quiet_known_noise
from .stopping import Stopped

PR_SET_PDEATHSIG = 1


def configure_logging() -> None:
    logging.basicConfig(level=train_env().log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("httpx", "urllib3", "DeepSpeed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_known_noise()  # logs.py: third-party messages that never concern a job, matched exactly
    # per-shard progress bars on load/save flood job logs (CloudWatch) and hide the metric lines
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def failure_text(exc: BaseException) -> str:
    """One actionable line first (it becomes FailureReason), details after."""
    if isinstance(exc, Stopped):
        return f"{exc}\n"
    if isinstance(exc, UserError):
        return f"{type(exc).__name__}: {exc}\n"
    tail = "".join(traceback.format_exception(exc))[-3000:]
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    hint = ""
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        hint = " Fix: lower per_device_train_batch_size or max_input_length, or use LoRA/QLoRA/ZeRO-3."
    return f"{type(exc).__name__}: {first}{hint}\n\n{tail}"


def _pdeathsig_setter():
    """A callable that makes the kernel SIGKILL the calling process when its parent exits (even by
    SIGKILL), or None off Linux. Resolved before fork: a preexec_fn should not load libraries."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def die_with_parent(expected_parent: int | None = None) -> None:
    """For a process started by another: die when it dies; exit now if it already has (the window
    between fork and this call)."""
    setter = _pdeathsig_setter()
    if setter is not None:
        setter()
    if expected_parent and os.getppid() != expected_parent:
        os._exit(137)
