"""Logs a person can follow: phase lines with durations, and known third-party noise filtered out.

A job's log should read as a story: what it is doing now, how long each part took, how far
training is. Phases are timed one after another (`Phases.begin` ends the previous one), so a
recipe marks each with one line and the durations land in metrics.json (`phases`).

Only messages known to be irrelevant to a job are dropped, each matched by the logger that emits
it and the start of its text; every other warning still shows.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("tuneforge.phases")

# (logger name, message start, why it never concerns a tuneforge job)
KNOWN_NOISE: tuple[tuple[str, str, str], ...] = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community",
     "an optional CPU kernel of bitsandbytes; 4-bit training runs on GPUs"),
    ("DeepSpeed", "Setting accelerator to CPU",
     "logged by every process that imports DeepSpeed on a machine without GPUs"),
    ("transformers.trainer_callback", "early stopping required metric_for_best_model, but did not find eval_loss",
     "the baseline evaluation before training names its loss eval_before_loss; later evaluations have eval_loss"),
    ("absl", "Using default tokenizer.", "rouge_score says so on every ROUGE computation"),
)


class DropMessages(logging.Filter):
    """Drops records whose message starts with one of `starts`; passes every other record."""

    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return True
        return not message.startswith(self.starts)


def quiet_known_noise() -> None:
    """Attach the filters to the loggers that emit the known noise (idempotent). A filter on a
    logger sees the records that logger creates, so nothing else is touched; it stays when the
    library configures its logger later (DeepSpeed adds handlers and levels, never removes filters)."""
    by_logger: dict[str, list[str]] = {}
    for name, start, _why in KNOWN_NOISE:
        by_logger.setdefault(name, []).append(start)
    for name, starts in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(tuple(starts)))


def format_duration(seconds: float | None) -> str:
    """0.42 s, 12.3 s, 4 min 05 s, 1 h 02 min."""
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_eta(seconds: float | None) -> str:
    """H:MM:SS, as a clock reads."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Phases:
    """Times consecutive phases of a job into `record` (name -> seconds) and logs each one's start
    and duration. `begin` ends the phase before it; `end` ends the last one."""

    def __init__(self, record: dict[str, float], clock: Callable[[], float] = time.monotonic):
        self.record = record
        self.clock = clock
        self.current: str | None = None
        self.started = 0.0
        from .contract import train_env

        self.quiet = train_env().rank != 0  # every rank times its phases; rank 0 tells them

    def begin(self, name: str) -> None:
        self.end()
        self.current, self.started = name, self.clock()
        if not self.quiet:
            log.info("%s ...", name)

    def end(self) -> None:
        if self.current is None:
            return
        seconds = self.clock() - self.started
        self.record[self.current] = round(self.record.get(self.current, 0.0) + seconds, 3)
        if not self.quiet:
            log.info("%s: done in %s", self.current, format_duration(seconds))
        self.current = None


def never_fail(action: Callable[[], object], what: str):
    """Run an optional step (the report): an error is logged and the job's result stands."""
    try:
        return action()
    except Exception as exc:  # noqa: BLE001 - by design: nothing optional may fail the job
        logger = logging.getLogger("tuneforge")
        logger.error("%s failed (the job's result is unaffected): %s: %s", what, type(exc).__name__, exc)
        logger.debug("%s failed", what, exc_info=True)  # the traceback, with TUNEFORGE_LOG_LEVEL=DEBUG
        return None
