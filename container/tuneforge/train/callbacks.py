"""Trainer callbacks: metric lines SageMaker metric definitions can parse, stopping on SIGTERM,
committing checkpoints atomically."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from transformers import TrainerCallback

from . import stopping
from .checkpoints import commit, relocate, rotate
from .distributed import barrier
from .metrics import perplexity, print_metric

log = logging.getLogger(__name__)


class MetricLines(TrainerCallback):
    """Print `[metric] train_loss=...` and `[metric] eval_loss=...` lines from rank 0."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        context = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 3)}
        if "loss" in logs:
            print_metric("train_loss", logs["loss"], **context)
        if "eval_loss" in logs:
            print_metric("eval_loss", logs["eval_loss"], **context)
            print_metric("eval_perplexity", perplexity(logs["eval_loss"]), **context)


class StopOnSignal(TrainerCallback):
    """At each optimizer step's end: if any rank got SIGTERM, all save this step and stop."""

    def __init__(self):
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if stopping.agreed():
            stopping.STATE.signal_name = stopping.STATE.signal_name or "SIGTERM"
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control


class CommitCheckpoints(TrainerCallback):
    """After the Trainer saved into staging on every rank: manifest, rename, rotate."""

    def __init__(self, staging: Path, final_dir: Path, keep: int):
        self.staging = Path(staging)
        self.final_dir = Path(final_dir)
        self.keep = keep
        self.committed: list[Path] = []

    def on_save(self, args, state, control, **kwargs):
        barrier()  # every rank has written its RNG state and shards
        staged = self.staging / f"checkpoint-{state.global_step}"
        final = self.final_dir / staged.name
        state.best_model_checkpoint = relocate(state.best_model_checkpoint, self.staging, self.final_dir)
        if args.should_save and staged.is_dir():
            if not state.is_world_process_zero and not (args.deepspeed or args.fsdp):
                save_weights_on_this_host(kwargs.get("model"), staged)
            trainer_state = staged / "trainer_state.json"
            if trainer_state.exists():
                data = json.loads(trainer_state.read_text())
                data["best_model_checkpoint"] = relocate(data.get("best_model_checkpoint"), self.staging, self.final_dir)
                trainer_state.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            start = time.time()
            commit(staged, self.final_dir)
            rotate(self.final_dir, self.keep, protect=state.best_model_checkpoint and Path(state.best_model_checkpoint))
            log.info("checkpoint %s committed in %.2f s", final, time.time() - start)
        barrier()
        self.committed.append(final)
        return control


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def save_weights_on_this_host(model, staged: Path) -> None:
    """transformers 5's save_pretrained writes weights on global rank 0 alone once torch.distributed
    is up, yet with several hosts each resumes from its own disk (save_on_each_node): a checkpoint
    on any other host would hold no weights and fail to load. DDP ranks hold whole, identical
    weights, so this host's writer saves them itself. DeepSpeed keeps its own per-host states
    (global_step*), and peft adapters are written on every host already. Not for FSDP: its
    weights are sharded, and gathering them is a collective the other hosts would not join."""
    if model is None or any((staged / name).exists() for name in WEIGHT_FILES):
        return
    # an instance attribute shadows the rank-0 check of this one call
    model.should_save_on_this_rank = lambda is_main_process: is_main_process
    try:
        model.save_pretrained(staged, safe_serialization=True)
    finally:
        del model.should_save_on_this_rank
