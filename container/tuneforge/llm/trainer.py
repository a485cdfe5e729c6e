"""TuneforgeTrainer: the Hugging Face Trainer with tuneforge's four changes, decided once in setup.

The recipe decides, before the Trainer exists, which of them a run uses and hands the decisions
in as one frozen TrainerPlan; nothing is set on the Trainer after it is built:
- length grouping: LengthGroupedSampler for the training batches (batching.py);
- chunked loss: the LM head's cross-entropy a chunk of positions at a time (loss.py);
- unpacked evaluation: padded evaluation batches while training batches are packed (packing.py);
- background checkpoints: the previous checkpoint settled before a new one, the weights and the
  optimizer state of a deferred one written by a thread (background_checkpoints.py, callbacks.py).

The changes live in one mixin, so the same behaviour goes onto the Trainer, the Seq2SeqTrainer
and TRL's preference trainers (all Trainer subclasses). Four of its methods override private
Trainer methods; tests/unit/test_trainer_overrides.py pins their signatures to the transformers
version in constraints.txt.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PrinterCallback, Seq2SeqTrainer, Trainer

from ..job.background_checkpoints import checkpoint_bytes
from .batching import length_grouped_sampler
from .loss import chunked_compute_loss


@dataclass(frozen=True)
class TrainerPlan:
    """What the recipe decided about the Trainer; the defaults are the plain Trainer's behaviour."""
    length_grouping: bool = False     # LengthGroupedSampler instead of the Trainer's random sampler
    chunked_loss: bool = False        # chunked_causal_lm_loss for batches with labels
    eval_collator: Any = None         # evaluation batches collated (padded) by this, not the training collator
    checkpoint_commit: Any = None     # callbacks.CommitCheckpoints; None: checkpoints saved as the Trainer does


class TuneforgeTrainerMixin:
    """Put before a Trainer class in the bases: `plan` (a TrainerPlan) is a keyword of the constructor."""

    def __init__(self, *args, plan: TrainerPlan, **kwargs):
        self.plan = plan  # set first, so the methods below work from the constructor on
        super().__init__(*args, **kwargs)
        self.remove_callback(PrinterCallback)  # tuneforge's metric-line callbacks print each log once, readably

    # ------------------------------------------------------------------ batches and loss
    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if not self.plan.length_grouping or not hasattr(dataset, "__len__"):
            return super()._get_train_sampler(train_dataset)
        return length_grouped_sampler(dataset, self.args)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.plan.chunked_loss or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = chunked_compute_loss(model, self.accelerator.unwrap_model(model), inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as the Trainer's own compute_loss does
        return (loss, outputs) if return_outputs else loss

    def get_eval_dataloader(self, eval_dataset=None):
        """Padded evaluation batches under packing: the Trainer weights each batch's loss by its row
        count, which packing would change, so eval_loss stays comparable across runs."""
        if self.plan.eval_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        packed, self.data_collator = self.data_collator, self.plan.eval_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = packed

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial):
        commit = self.plan.checkpoint_commit
        if commit is None:
            return super()._save_checkpoint(model, trial)
        commit.estimate = lambda: checkpoint_bytes(self.model, self.optimizer)
        commit.settle(self.args, self.state, self.model)  # the previous one: wait for its files, commit it
        commit.writer.begin(final=self.control.should_training_stop or self.state.global_step >= self.state.max_steps)
        try:
            with commit.disk_full_named(self.state.global_step):
                super()._save_checkpoint(model, trial)
        finally:
            commit.writer.end()

    def _save(self, output_dir=None, state_dict=None):
        writer = self._checkpoint_writer()
        if writer is not None and writer.deferring and self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)  # the files written at once go there too
        if not (writer is not None and state_dict is None and self.args.should_save
                and writer.defer(self._write_model, self.model.state_dict(), output_dir)):
            super()._save(output_dir, state_dict)

    def _write_model(self, state_dict, output_dir):
        super()._save(output_dir, state_dict)

    def _save_optimizer_and_scheduler(self, output_dir):
        from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME

        writer = self._checkpoint_writer()
        path = os.path.join(output_dir, OPTIMIZER_NAME)
        if not (writer is not None and self.args.should_save
                and writer.defer(torch.save, self.optimizer.state_dict(), path)):
            super()._save_optimizer_and_scheduler(output_dir)
            return
        torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def _checkpoint_writer(self):
        """The background_checkpoints.CheckpointWriter of the plan's commit, or None."""
        commit = self.plan.checkpoint_commit
        return None if commit is None else commit.writer


class TuneforgeTrainer(TuneforgeTrainerMixin, Trainer):
    """The fine-tuning recipe's Trainer for causal models."""


class TuneforgeSeq2SeqTrainer(TuneforgeTrainerMixin, Seq2SeqTrainer):
    """The fine-tuning recipe's Trainer for encoder-decoder models."""


@functools.cache
def tuneforge_trainer_class(base: type) -> type:
    """`base` (the Trainer, the Seq2SeqTrainer or one of TRL's trainers) with TuneforgeTrainerMixin."""
    known = {Trainer: TuneforgeTrainer, Seq2SeqTrainer: TuneforgeSeq2SeqTrainer}
    return known.get(base) or type(f"Tuneforge{base.__name__}", (TuneforgeTrainerMixin, base), {})
