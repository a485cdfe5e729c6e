"""Trainer callbacks: metric lines SageMaker metric definitions can parse."""

from __future__ import annotations

from transformers import TrainerCallback

from .metrics import perplexity, print_metric


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
