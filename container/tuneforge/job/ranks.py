"""One failure file for a job of many processes.

Each rank that fails with a Python exception writes output/.ranks/rank-N.error. torchrun (run
through tuneforge.job.rankrun) records which ranks failed on their own, with exit code or
signal, in output/.ranks/node-K.json; the ranks it then tears down are not in it. The launcher
turns both into one failure file whose first line names the failing rank and the cause.
"""

from __future__ import annotations

import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from ..contract import Paths


TEARDOWN_CODES = (143, -15)


def ranks_dir(paths: Paths) -> Path:
    return paths.output_dir / ".ranks"


def error_file(paths: Paths, rank: int) -> Path:
    return ranks_dir(paths) / f"rank-{rank}.error"


def failures_file(paths: Paths, node_rank: int) -> Path:
    return ranks_dir(paths) / f"node-{node_rank}.json"


def clear(paths: Paths) -> None:
    """Forget the previous run's rank errors and stop marker (never output/failure itself)."""
    shutil.rmtree(ranks_dir(paths), ignore_errors=True)
    ranks_dir(paths).mkdir(parents=True, exist_ok=True)


def write_rank_error(paths: Paths, rank: int, text: str) -> None:
    target = error_file(paths, rank)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(target)


@dataclass
class RankFailure:
    rank: int
    exitcode: int | None = None
    timestamp: float | None = None
    error: str | None = None  # the rank's own failure text, when it wrote one
    stopped: bool = False  # a requested stop, not a failure: the text says it all

    def first_line(self) -> str:
        if self.error and self.stopped:
            return self.error.splitlines()[0]
        if self.error:
            lines = self.error.splitlines()
            return f"{lines[0]} (rank {self.rank})" if lines else f"rank {self.rank} failed"
        code = self.exitcode
        if code is not None and code < 0:
            return killed_line(f"rank {self.rank}", -code)
        return f"rank {self.rank} exited with code {code} without a Python error (see the log above)"

    def text(self) -> str:
        body = "\n".join(self.error.splitlines()[1:]) if self.error else ""
        return self.first_line() + "\n" + (body + "\n" if body.strip() else "")


def killed_line(who: str, number: int) -> str:
    """The failure line for a process killed by a signal, which leaves no Python error behind."""
    name = _signal_name(number)
    hint = {
        "SIGKILL": " (the kernel's out-of-memory killer sends SIGKILL when host memory runs out, so most "
                   "likely out of memory). Fix: lower per_device_train_batch_size or max_input_length, set "
                   "gradient_checkpointing=True, use LoRA, QLoRA or ZeRO-3 with offload, or use an instance "
                   "with more memory",
        "SIGSEGV": " (a crash in native code: check the driver/CUDA versions and the log above)",
        "SIGABRT": " (aborted in native code, often a NCCL or CUDA error: see the log above)",
    }.get(name, "")
    return f"{who} was killed by signal {name} ({number}){hint}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def rank_errors(paths: Paths) -> dict[int, tuple[float, str]]:
    """rank -> (time written, text) for every rank-N.error."""
    folder = ranks_dir(paths)
    found = {}
    for path in folder.glob("rank-*.error") if folder.is_dir() else []:
        try:
            found[int(path.stem.split("-")[1])] = (path.stat().st_mtime, path.read_text())
        except (ValueError, OSError):
            continue
    return found


def torchrun_failures(paths: Paths) -> list[dict]:
    folder = ranks_dir(paths)
    out = []
    for path in sorted(folder.glob("node-*.json")) if folder.is_dir() else []:
        try:
            out += json.loads(path.read_text()).get("failures", [])
        except (OSError, ValueError):
            continue
    return out


def root_cause(paths: Paths, *, stopping: bool = False) -> RankFailure | None:
    """The failure that started it: on a requested stop, rank 0's stop message; otherwise the
    earliest of the ranks torchrun saw fail on their own (with their error text when they wrote one),
    else the earliest error file."""
    errors = rank_errors(paths)
    if stopping and errors:
        first = min(errors)
        return RankFailure(first, error=errors[first][1], timestamp=errors[first][0], stopped=True)
    candidates = []
    failures = torchrun_failures(paths)
    # torchrun also lists the ranks it tore down itself after the first failure (SIGTERM: exit
    # 143 from the worker's handler, or -15 before the handler was installed)
    own = [f for f in failures if f.get("exitcode") not in TEARDOWN_CODES or int(f["rank"]) in errors]
    for failure in own or failures:
        rank = int(failure["rank"])
        if rank in errors:
            written, text = errors[rank]
            # a rank with its own error: order by when it wrote it (sub-second)
            candidates.append(RankFailure(rank, failure.get("exitcode"), written, text))
        else:
            # killed or crashed: torchrun's timestamp has whole seconds; on a tie it comes first,
            # since a dead peer is what makes the other ranks' collectives fail
            candidates.append(RankFailure(rank, failure.get("exitcode"), float(failure.get("timestamp") or 0) - 1.0))
    if not candidates:
        candidates = [RankFailure(rank, None, written, text) for rank, (written, text) in errors.items()]
    if not candidates:
        return None
    return min(candidates, key=lambda f: (f.timestamp or 0.0, f.rank))


def collect(paths: Paths, exitcode: int, *, stopping: bool = False) -> str:
    cause = root_cause(paths, stopping=stopping)
    if cause is None and stopping:
        from .checkpoints import latest_checkpoint

        latest = latest_checkpoint(paths.checkpoint_dir)
        return (f"stopped by SIGTERM before the ranks could save; latest checkpoint: {latest or 'none'}; "
                "rerun to resume\n")
    if cause is None and exitcode < 0:
        return killed_line("torchrun (the process that runs this host's ranks)", -exitcode) + "\n"
    if cause is None:
        return f"a training process exited with code {exitcode} and left no error (see the log)\n"
    return cause.text()
