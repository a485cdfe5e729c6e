"""The hyperparameters as TrainingArguments: a table for the ones passed on unchanged, then the
few derived ones (evaluation follows checkpoints, warmup steps or ratio). Where a value differs from
what a hyperparameter asked for, the log says so and why."""

from __future__ import annotations

import logging
from typing import Any

from ..config import TrainConfig

log = logging.getLogger(__name__)

# hyperparameter -> the TrainingArguments argument it sets unchanged.
TRAINING_ARGUMENTS = {
    "epoch": "num_train_epochs", "max_steps": "max_steps",
    "per_device_train_batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate", "lr_scheduler_type": "lr_scheduler_type", "weight_decay": "weight_decay",
    "adam_beta1": "adam_beta1", "adam_beta2": "adam_beta2", "adam_epsilon": "adam_epsilon",
    "max_grad_norm": "max_grad_norm", "label_smoothing_factor": "label_smoothing_factor",
    "save_total_limit": "save_total_limit", "logging_steps": "logging_steps", "seed": "seed",
    "dataloader_num_workers": "dataloader_num_workers",
}


def training_arguments(config: TrainConfig, *, has_validation: bool) -> dict[str, Any]:
    """The TrainingArguments the hyperparameters decide: the table above, then the derived ones.
    Where a value differs from what a hyperparameter asked for, the log says so and why."""
    args = {argument: getattr(config, name) for name, argument in TRAINING_ARGUMENTS.items()}
    if config.warmup_steps > 0 and config.warmup_ratio > 0:
        _override("warmup_steps", config.warmup_steps, f"warmup_ratio={config.warmup_ratio}",
                  "warmup_steps > 0 wins over warmup_ratio")
    args.update(per_device_eval_batch_size=config.eval_batch_size, data_seed=config.seed,
                warmup_steps=config.warmup_steps if config.warmup_steps > 0 else config.warmup_ratio,
                # the Trainer's own sampler; group_by_length is tuneforge's LengthGroupedSampler instead,
                # chosen once the data is read (TrainerPlan.length_grouping, llm/trainer.py)
                train_sampling_strategy="random")
    args.update(_evaluation_and_saving(config, has_validation))
    return args


def _evaluation_and_saving(config: TrainConfig, has_validation: bool) -> dict[str, Any]:
    """Checkpoints every checkpoint_steps or each epoch; evaluation follows them where it must."""
    save = "steps" if config.checkpoint_steps > 0 else "epoch"
    evaluate = config.evaluation_strategy
    if evaluate != "no" and not has_validation:
        _override("eval_strategy", "no", f"evaluation_strategy={evaluate}", "there is no validation data")
        evaluate = "no"
    if evaluate not in ("no", save) and config.load_best_model_at_end:
        _override("eval_strategy", save, f"evaluation_strategy={evaluate}",
                  "load_best_model_at_end needs evaluations where checkpoints are saved")
        evaluate = save
    steps = config.checkpoint_steps or config.eval_steps
    if evaluate == "steps" and steps != config.eval_steps:
        _override("eval_steps", steps, f"eval_steps={config.eval_steps}",
                  "evaluation runs at checkpoint_steps, where checkpoints are saved")
    load_best = config.load_best_model_at_end and evaluate != "no"
    if config.load_best_model_at_end and not load_best:
        _override("load_best_model_at_end", False, "load_best_model_at_end=True", "nothing is evaluated")
    return dict(eval_strategy=evaluate, eval_steps=steps, save_strategy=save, save_steps=steps,
                load_best_model_at_end=load_best, metric_for_best_model="eval_loss", greater_is_better=False)


def _override(argument: str, value: Any, asked: str, reason: str) -> None:
    log.info("TrainingArguments %s=%s instead of %s: %s", argument, value, asked, reason)
