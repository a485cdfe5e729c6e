"""SIGTERM (SageMaker StopTrainingJob, spot interruption: SIGKILL follows 120 s later): save a
checkpoint at the end of the current step and exit non-zero, saying where to resume from.

Single process: the handler only sets a flag; a callback sees it at the end of the step.
Under torchrun, the launcher first writes a stop marker and then forwards SIGTERM to torchrun,
which forwards it to every rank. A rank that finds the marker (waiting up to MARKER_GRACE_S for
it, since a process-group signal reaches the ranks and the launcher together) asks for a graceful
stop; the ranks agree (an all-reduce) so they all save the same step together. That all-reduce
is not run at every step end, which would sync the ranks once a step for a rare event:
StopSchedule runs it every few steps (at most STOP_CHECK_STEPS, and about STOP_CHECK_SECONDS of
training apart) and at every step that saves, evaluates or ends training anyway.
A SIGTERM without the marker is torchrun tearing the group down after another rank failed: that
rank leaves and writes no error of its own, so the failure file names the rank that really failed.

After training: a SIGTERM during the final evaluation ends it (one process: at its next batch;
several ranks: once the loss evaluation or the whole evaluation is over, where they agree) and the
job stops without writing model/, exit 143; the rerun evaluates and saves. Once the model save has
begun, it is finished (it has to fit the 120 s before SIGKILL) and the job ends normally, exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .distributed import any_rank, dist_ready

log = logging.getLogger(__name__)

# Most steps between two stop agreements of a multi-process job, and about the most seconds: SIGKILL
# follows SIGTERM by 120 s, and the agreed step still has to finish and write its checkpoint.
STOP_CHECK_STEPS = 10
STOP_CHECK_SECONDS = 15.0

# Slurm's scancel (and `kill -- -PGID`) signals the launcher and every rank at the same moment: a
# rank may get SIGTERM a little before the launcher has written the marker, so it waits this long.
MARKER_GRACE_S = 3.0


class Stopped(Exception):
    """Training stopped on request; the message is the failure file's first line."""


class TornDown(BaseException):
    """torchrun is ending this rank because another one failed; not this rank's error."""


class _State:
    signal_name: str | None = None
    marker: Path | None = None
    during: tuple[str, str] | None = None  # (what runs now, what a stop does to it) after training


# what a SIGTERM does in each stage after training (see the module doc)
FINAL_EVALUATION = ("the final evaluation", "the evaluation ends and the job stops without writing model/ "
                    "(exit 143); rerun to evaluate and save")
MODEL_SAVE = ("the model save", "the save is finished (it must fit the 120 s before SIGKILL) and the job ends "
              "normally with its model (exit 0)")


STATE = _State()


def stop_marker(paths) -> Path:
    return paths.output_dir / ".ranks" / "stop-requested"


def requested() -> str | None:
    return STATE.signal_name


def reset() -> None:
    STATE.signal_name = None


def _marker_appears(marker: Path, grace_s: float = MARKER_GRACE_S) -> bool:
    deadline = time.monotonic() + grace_s
    while not marker.exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _handler(signum, frame):  # noqa: ARG001
    name = signal.Signals(signum).name
    if STATE.marker is not None and not _marker_appears(STATE.marker):
        raise TornDown(name)
    if STATE.signal_name is None:
        STATE.signal_name = name
        if STATE.during is not None:
            log.warning("%s received during %s: %s", name, *STATE.during)
            return
        log.warning("%s received: a checkpoint will be saved at the end of this step (with several ranks: of the "
                    "next step they agree on, at most %d steps on)", name, STOP_CHECK_STEPS)


def install(*, marker: Path | None = None):
    """Handle SIGTERM in this process; `marker` (torchrun ranks) tells a stop from a teardown.
    Returns the previous handler for restore(), or None off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None
    reset()
    STATE.marker = marker
    return signal.signal(signal.SIGTERM, _handler)


def restore(previous) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
    STATE.marker = None


@contextmanager
def during(stage: tuple[str, str]):
    """Within: a SIGTERM is logged as arriving during stage[0], with what it does (stage[1])."""
    STATE.during = stage
    try:
        yield
    finally:
        STATE.during = None


def agreed() -> bool:
    """Whether any rank was asked to stop (a collective: every rank must call it at the same point)."""
    return any_rank(STATE.signal_name is not None)


def stopped_message(when: str, checkpoint: Path | None) -> str:
    name = requested() or "SIGTERM"
    if checkpoint is not None:
        return f"stopped by {name} {when}; checkpoint saved to {checkpoint}; rerun to resume"
    return f"stopped by {name} {when}; no checkpoint was written; rerun to start again"


class StopSchedule:
    """When the ranks next agree on a stop (see the module doc). Every rank must decide alike, so
    the interval travels in the agreeing all-reduce itself: each rank proposes how many steps fit
    in STOP_CHECK_SECONDS at its own pace, and all take the shortest proposal."""

    def __init__(self):
        self.next_step: int | None = None  # None: agree at the first step end
        self.last: tuple[float, int] | None = None  # (monotonic time, step) of the previous agreement

    def stop(self, step: int, *, due_anyway: bool = False) -> bool:
        """Whether to stop at the end of `step`. `due_anyway`: this step saves, evaluates or ends
        training (the same on every rank). One process decides alone at every step."""
        if not dist_ready():
            return requested() is not None
        if not due_anyway and self.next_step is not None and step < self.next_step:
            return False
        stop, interval = self._agree(step)
        self.next_step = step + interval
        return stop

    def _agree(self, step: int) -> tuple[bool, int]:
        import torch
        import torch.distributed as dist

        from .distributed import _device

        now = time.monotonic()
        proposal = STOP_CHECK_STEPS
        if self.last is not None and step > self.last[1]:
            step_s = (now - self.last[0]) / (step - self.last[1])
            proposal = max(1, min(STOP_CHECK_STEPS, int(STOP_CHECK_SECONDS / max(step_s, 1e-9))))
        self.last = (now, step)
        # one all-reduce: MAX of the flags, and MAX of the negated intervals = the shortest interval
        value = torch.tensor([1.0 if requested() is not None else 0.0, -float(proposal)], device=_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value[0].item() > 0), int(-value[1].item())
