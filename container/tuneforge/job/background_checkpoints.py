"""Checkpoints whose large files are written in the background, so training does not wait for the disk.

For full fine-tuning on one host without DeepSpeed or FSDP (`async_checkpoint`, on by default): at
a checkpoint the writer rank copies the weights and the optimizer state into host memory (each
storage once, so tied weights stay tied), hands the copies to one writer thread and trains on;
the small files (scheduler, RNG, trainer state) are written at once. CommitCheckpoints commits
the checkpoint (manifest, rename) only when every rank's writer has finished, so until then it is
an unmanifested folder in staging that a restart ignores. Training waits for the writer before
the next checkpoint, at the last step and when it stops; the checkpoint then equals the one a
synchronous save would have written, file for file. LoRA checkpoints are small and written at once.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

log = logging.getLogger(__name__)

# free host memory a snapshot needs, in multiples of its size: the safetensors writer makes one
# more copy of the weights while it writes
MEMORY_HEADROOM = 2.0


def _storage_key(tensor: torch.Tensor) -> tuple:
    return str(tensor.device), tensor.untyped_storage().data_ptr()


def _tensors(value):
    """Every tensor in a nested state dict."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (dict, list, tuple)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _tensors(item)


def snapshot(value, memo: dict | None = None):
    """A copy in host memory of a state dict (nested dicts, lists, tuples and tensors). Each
    storage is copied once, so tensors that shared memory (tied embeddings) still share it."""
    memo = {} if memo is None else memo
    if isinstance(value, torch.Tensor):
        key = _storage_key(value)
        if key not in memo:
            storage = value.untyped_storage()
            memo[key] = storage.clone() if value.device.type == "cpu" else storage.cpu()
        copy = torch.empty(0, dtype=value.dtype)
        return copy.set_(memo[key], value.storage_offset(), value.shape, value.stride())
    if isinstance(value, dict):
        return {key: snapshot(item, memo) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(item, memo) for item in value)
    return value


def storage_bytes(value) -> int:
    """The bytes `snapshot(value)` copies: each storage once."""
    return sum({_storage_key(t): t.untyped_storage().nbytes() for t in _tensors(value)}.values())


def checkpoint_bytes(model, optimizer) -> int:
    """Roughly what a checkpoint takes on disk: the trained weights and the optimizer state."""
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return trained + (storage_bytes(optimizer.state_dict()) if optimizer is not None else 0)


def free_memory_bytes() -> int:
    import psutil

    return psutil.virtual_memory().available


class CheckpointWriter:
    """One checkpoint's large files at a time, written by a thread from snapshots.

    The Trainer calls begin() before a checkpoint and end() after it; between them `defer` takes
    the weights and the optimizer state. Whether a checkpoint was begun deferred depends only on
    what every rank knows alike (the run's setting, the last step), so every rank agrees on when
    a commit is pending; a rank without enough free memory writes its files at once instead."""

    def __init__(self, enabled: bool, why_not: str = ""):
        self.enabled = enabled
        self.why_not = why_not            # why checkpoints are written at once, for metrics.json
        self.deferring = False            # inside a checkpoint that may finish in the background
        self.last_deferred = False        # the checkpoint just saved was begun deferred
        self.write_s: list[float] = []    # how long each background write took
        self._futures: list[Future] = []
        self._started = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._warned = False

    def begin(self, *, final: bool) -> None:
        self.deferring = self.enabled and not final

    def end(self) -> None:
        self.last_deferred, self.deferring = self.deferring, False

    def defer(self, write, state, *args) -> bool:
        """Copy `state` and run write(copy, *args) in the background; False (the caller writes
        at once) when not inside a deferred checkpoint or when free memory is short."""
        if not self.deferring:
            return False
        need, free = storage_bytes(state) * MEMORY_HEADROOM, free_memory_bytes()
        if need > free:
            if not self._warned:
                log.warning("checkpoint files written at once: a background copy needs %.1f GiB of free memory, "
                            "%.1f GiB is free", need / 2**30, free / 2**30)
                self._warned = True
            return False
        copy = snapshot(state)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        if not self._futures:
            self._started = time.time()
        self._futures.append(self._pool.submit(write, copy, *args))
        return True

    def done(self) -> bool:
        return all(future.done() for future in self._futures)

    def wait(self, folder: os.PathLike | str) -> float:
        """Block until the files of the checkpoint in `folder` are written (a write's error is raised
        here, naming the folder); returns the seconds waited."""
        start = time.time()
        futures, self._futures = self._futures, []
        for future in futures:
            try:
                future.result()
            except OSError as error:
                error.add_note(f"while writing checkpoint {folder} in the background")
                raise
        if futures:
            self.write_s.append(time.time() - self._started)
        return time.time() - start

