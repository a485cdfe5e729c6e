"""The optimizer loop: batches -> loss -> step, with checkpoints and a stop on SIGTERM.

A checkpoint is saved every checkpoint_steps optimizer steps and when SIGTERM arrives (at the end
of the step in progress); a stopped run raises Stopped, whose message names the checkpoint, and a
rerun resumes from it, at the same batch of the same epoch.
"""

from __future__ import annotations

import logging
import math

import torch

from ..job import stopping
from ..job.finite import NonFiniteError
from ..job.metric_lines import print_metric
from .state import Position

log = logging.getLogger(__name__)

LOG_EVERY = 10


def run_loop(job, position: Position) -> list[tuple[int, float]]:
    """Train from `position` to job.total_steps; (step, loss) of every optimizer step run here.
    Each step's loss and learning rate go to the job's trackers (TensorBoard, MLflow)."""
    trackers = job.trackers
    cfg = job.config
    for module in job.modules.values():
        module.train()
    history: list[tuple[int, float]] = []
    accumulate = cfg.gradient_accumulation_steps
    while position.step < job.total_steps:
        batches = job.examples.batches(position.epoch, cfg.batch_size)
        groups = [batches[i:i + accumulate] for i in range(0, len(batches), accumulate)]
        for group in groups[position.batch // accumulate:]:
            learning_rate = job.optimizer.param_groups[0]["lr"]  # the rate this step uses
            loss = _optimizer_step(job, group)
            position.step += 1
            position.batch += len(group)
            history.append((position.step, loss))
            if trackers is not None:
                trackers.scalars({"train/loss": loss, "train/learning_rate": learning_rate}, position.step)
            if position.step % LOG_EVERY == 0 or position.step == job.total_steps:
                # epochs done, as a fraction (the language-model jobs' lines count the same way)
                done = round(position.epoch + position.batch / max(len(batches), 1), 3)
                print_metric("train_loss", loss, step=position.step, epoch=done)
            if _should_stop(job, position):
                return history
        position.epoch, position.batch = position.epoch + 1, 0
    return history


def _optimizer_step(job, group: list[list[int]]) -> float:
    cfg, total = job.config, 0.0
    params = [p for group_ in job.optimizer.param_groups for p in group_["params"]]
    for indices in group:
        batch = job.examples.batch(indices, job.generator)
        with job.autocast():
            loss = job.loss(batch.pixels, batch.input_ids, prior=batch.prior)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteError(f"the training loss became {value}", where="hyperparameter learning_rate",
                                 fix="lower learning_rate (DreamBooth on the full UNet wants about 2e-6, LoRA 1e-4)")
        (loss / len(group)).backward()
        total += value / len(group)
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    job.optimizer.step()
    job.scheduler.step()
    job.optimizer.zero_grad(set_to_none=True)
    return total


def _should_stop(job, position: Position) -> bool:
    """Save a checkpoint when due; raise Stopped after saving one when SIGTERM came."""
    every = job.config.checkpoint_steps
    stop = stopping.requested() is not None
    finished = position.step >= job.total_steps
    if stop or (every and position.step % every == 0 and not finished):
        saved = job.checkpoint(_normalized(job, position))
        if stop:
            raise stopping.Stopped(stopping.stopped_message(f"at step {position.step} of {job.total_steps}", saved))
    return finished


def _normalized(job, position: Position) -> Position:
    """The position with a finished epoch written as the start of the next one."""
    if position.batch >= len(job.examples.batches(position.epoch, job.config.batch_size)):
        return Position(position.step, position.epoch + 1, 0)
    return Position(position.step, position.epoch, position.batch)
