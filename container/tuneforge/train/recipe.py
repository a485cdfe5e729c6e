"""The fine-tuning recipe: setup -> train -> evaluate -> save, on the Hugging Face Trainer.

One explicit object with one method per stage. Data, modeling, metrics and artifacts live in
their own modules; this file only wires them together.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from ..contract import Paths
from ..data import Collator, read_channel, select_and_split, tokenize_examples
from ..errors import DataError
from ..modeling import apply_lora, count_parameters, has_cuda, load_model, load_tokenizer, resolve_base_model
from . import metrics as M
from .artifacts import ModelWriter
from .checkpoints import latest_checkpoint

log = logging.getLogger(__name__)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_max_length(config, tokenizer, model_config) -> int:
    """max_input_length=-1 means min(1024, what the tokenizer and the model allow)."""
    limits = [1024]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 10**9:
        limits.append(tokenizer.model_max_length)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
    auto = min(limits)
    if config.max_input_length == -1:
        return auto
    return min(config.max_input_length, max(limits[1:] or [config.max_input_length]))


class Recipe:
    def __init__(self, paths: Paths, config, raw_hyperparameters: dict | None = None):
        self.paths = paths
        self.config = config
        self.raw_hyperparameters = raw_hyperparameters or {}
        self.results: dict = {}
        self.samples: list[dict] = []
        self.writer = ModelWriter(paths)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.config
        seed_everything(cfg.seed)
        self.base_path = resolve_base_model(self.paths, cfg)
        train_channel = self.paths.train_channel()
        if train_channel is None:
            raise DataError("no training data channel", where=str(self.paths.data_dir),
                            fix="provide the data in a channel named `train` or `training`")
        self.data = read_channel(train_channel, cfg)
        val_channel = self.paths.validation_channel()
        self.val_data = (read_channel(val_channel, cfg, prompt=self.data.prompt, fmt=self.data.format)
                         if val_channel else None)
        self.train_examples, self.val_examples = select_and_split(
            self.data.examples, self.val_data.examples if self.val_data else None, cfg)

        tokenizer = load_tokenizer(self.base_path, cfg)
        self.loaded = load_model(self.base_path, cfg, tokenizer=tokenizer)
        self.tokenizer = tokenizer
        if self.data.format == "chat" and self.loaded.seq2seq:
            raise DataError("chat data needs a decoder-only model and the base model is seq2seq",
                            where=str(train_channel), fix="use instruction data for Flan-T5-style models")
        self.max_len = resolve_max_length(cfg, tokenizer, self.loaded.model.config)
        tok = dict(max_len=self.max_len, max_out=cfg.max_output_length, seq2seq=self.loaded.seq2seq,
                   workers=cfg.preprocessing_num_workers)
        self.train_tokens = tokenize_examples(self.train_examples, tokenizer, self.data.prompt, **tok)
        self.val_tokens = tokenize_examples(self.val_examples, tokenizer, self.data.prompt, **tok) \
            if self.val_examples else None
        self._report_data(train_channel)

        self.model = apply_lora(self.loaded, cfg) if cfg.use_lora else self.loaded.model
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
            if cfg.use_lora:
                self.model.enable_input_require_grads()
        trainable, total = count_parameters(self.model)
        log.info("model %s (%s): %d parameters, %d trainable (%.2f%%)", self.base_path,
                 "seq2seq" if self.loaded.seq2seq else "causal", total, trainable, 100 * trainable / total)
        self.results["parameters"] = {"total": total, "trainable": trainable}

    def _report_data(self, channel: Path) -> None:
        train, val = self.train_tokens.report(), self.val_tokens.report() if self.val_tokens else None
        report = {"format": self.data.format, "files": self.data.files, "max_input_length": self.max_len,
                  "validation_source": "channel" if self.val_data else f"split {self.config.validation_split_ratio}",
                  "train": train, "validation": val, "prompt": self.data.prompt.to_dict()}
        self.results["data"] = report
        log.info("data: format=%s from %s; train rows=%d sequences=%d truncated=%d trainable share=%.1f%%; "
                 "validation rows=%s", self.data.format, channel, train["rows"], train["sequences"],
                 train["rows_truncated"], 100 * train["trainable_share"], val["rows"] if val else 0)
        if train["rows_truncated"]:
            log.warning("%d training rows were longer than max_input_length=%d and were truncated (first: %s)",
                        train["rows_truncated"], self.max_len, ", ".join(train["truncated_examples"][:3]))

    # ------------------------------------------------------------------ train
    def _trainer(self):
        from transformers import EarlyStoppingCallback, Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, \
            TrainingArguments

        from .callbacks import MetricLines

        cfg = self.config
        has_val = bool(self.val_tokens and self.val_tokens.features)
        eval_strategy = cfg.evaluation_strategy if has_val else "no"
        save_strategy = "steps" if cfg.checkpoint_steps > 0 else "epoch"
        if eval_strategy != "no" and cfg.load_best_model_at_end:
            eval_strategy = save_strategy  # the Trainer needs them equal to pick the best checkpoint
        steps = cfg.checkpoint_steps or cfg.eval_steps
        args_class = Seq2SeqTrainingArguments if self.loaded.seq2seq else TrainingArguments
        dtype = self.loaded.dtype
        args = args_class(
            output_dir=str(self.paths.checkpoint_dir),
            num_train_epochs=cfg.epoch, max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.per_device_train_batch_size,
            per_device_eval_batch_size=cfg.per_device_eval_batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type,
            warmup_steps=cfg.warmup_steps if cfg.warmup_steps > 0 else cfg.warmup_ratio,
            weight_decay=cfg.weight_decay, adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
            adam_epsilon=cfg.adam_epsilon, max_grad_norm=cfg.max_grad_norm,
            label_smoothing_factor=cfg.label_smoothing_factor,
            eval_strategy=eval_strategy, eval_steps=steps, save_strategy=save_strategy, save_steps=steps,
            save_total_limit=cfg.save_total_limit, save_only_model=False,
            load_best_model_at_end=cfg.load_best_model_at_end and eval_strategy != "no",
            metric_for_best_model="eval_loss", greater_is_better=False,
            logging_steps=cfg.logging_steps, logging_first_step=True, seed=cfg.seed, data_seed=cfg.seed,
            bf16=has_cuda() and dtype == torch.bfloat16, fp16=has_cuda() and dtype == torch.float16,
            use_cpu=not has_cuda(), ddp_backend="gloo" if not has_cuda() and _world_size() > 1 else None,
            dataloader_num_workers=cfg.dataloader_num_workers, remove_unused_columns=False,
            report_to=[], disable_tqdm=True,
            deepspeed=self.deepspeed_config(), gradient_checkpointing=False,
        )
        callbacks = [MetricLines()]
        if args.load_best_model_at_end and cfg.early_stopping_patience > 0:
            callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold))
        trainer_class = Seq2SeqTrainer if self.loaded.seq2seq else Trainer
        return trainer_class(model=self.model, args=args, train_dataset=self.train_tokens.features,
                             eval_dataset=self.val_tokens.features if has_val else None,
                             data_collator=Collator(self.tokenizer.pad_token_id),
                             processing_class=self.tokenizer, callbacks=callbacks)

    def deepspeed_config(self):
        if self.config.deepspeed == "none":
            return None
        from .distributed import deepspeed_config

        return deepspeed_config(self.config, self.paths)

    def train(self) -> None:
        self.trainer = self._trainer()
        if self.trainer.eval_dataset is not None:
            before = self.trainer.evaluate(metric_key_prefix="eval_before")
            self.results["eval_loss_before"] = before["eval_before_loss"]
            self._generate_samples("before")
        resume = latest_checkpoint(self.paths.checkpoint_dir)
        if resume:
            log.info("resuming from %s", resume)
        start = time.time()
        output = self.trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        runtime = time.time() - start
        tokens = self.train_tokens.tokens * max(1.0, float(output.metrics.get("epoch", 1)))
        self.results.update(train_loss=output.training_loss, train_runtime_s=round(runtime, 2),
                            steps=output.global_step, epochs=output.metrics.get("epoch"),
                            train_tokens_per_second=round(tokens / runtime, 1) if runtime else None,
                            resumed_from=str(resume) if resume else None)

    # ------------------------------------------------------------------ evaluate
    def evaluate(self) -> dict:
        r = self.results
        if self.trainer.eval_dataset is not None:
            r["eval_loss"] = self.trainer.evaluate()["eval_loss"]
            r["perplexity_before"] = M.perplexity(r.get("eval_loss_before"))
            r["perplexity"] = M.perplexity(r["eval_loss"])
            self._generate_samples("after")
        r["train_perplexity"] = M.perplexity(r.get("train_loss"))
        if is_main_process():
            for name in ("train_loss", "train_perplexity", "eval_loss", "perplexity", *M.ROUGE_KEYS):
                if isinstance(r.get(name), (int, float)):
                    M.print_metric(f"final_{name}", r[name])
            if "eval_loss" in r:  # the line JumpStart's Llama metric definitions match
                print(f" eval_ppl=tensor({r['perplexity']:.4f}) eval_epoch_loss=tensor({r['eval_loss']:.4f})",
                      flush=True)
        return r

    def _generate_samples(self, stage: str) -> None:
        """Greedy answers on capped validation prompts; ROUGE against the references."""
        if self.config.rouge_samples == 0 or self.data.format == "domain" or not is_main_process():
            return
        pairs = M.generation_pairs(self.val_examples, self.tokenizer, self.data.prompt, self.config.rouge_samples)
        if not pairs:
            return
        model = self.trainer.accelerator.unwrap_model(self.trainer.model) if hasattr(self, "trainer") else self.model
        answers = M.generate(model, self.tokenizer, [p for p, _ in pairs], seq2seq=self.loaded.seq2seq,
                             max_new_tokens=self.config.max_output_length, max_input_length=self.max_len,
                             batch_size=max(self.config.per_device_eval_batch_size, 8))
        scores = M.rouge(answers, [ref for _, ref in pairs])
        if stage == "before":
            self.results["rouge_before"] = scores
            self.samples = [{"prompt": p, "reference": ref, "before": a} for (p, ref), a in zip(pairs, answers)]
        else:
            self.results.update(scores)
            for sample, answer in zip(self.samples or [{} for _ in pairs], answers):
                sample["after"] = answer
        model.train()

    # ------------------------------------------------------------------ save
    def save(self) -> None:
        """Rank 0 writes model/ (through staging) and output/data/."""
        from .saving import save_model

        staging = self.writer.start() if is_main_process() else None
        adapter_only = save_model(self, staging)
        if not is_main_process():
            return
        self.writer.write_metadata({
            "architecture": "seq2seq" if self.loaded.seq2seq else "causal",
            "model_type": self.loaded.model.config.model_type,
            "base_model": self.base_path.name, "base_model_path": str(self.base_path) if adapter_only else None,
            "adapter_only": adapter_only, "data_format": self.data.format,
            "prompt": self.data.prompt.to_dict(), "max_input_length": self.max_len,
            "hyperparameters": self.config.to_dict(), "metrics": _metric_summary(self.results),
        })
        self.writer.publish()
        self.write_reports()

    def write_reports(self) -> None:
        out = self.paths.output_data_dir
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        if self.samples:
            (out / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in self.samples))
        history = getattr(getattr(self, "trainer", None), "state", None)
        if history is not None:
            (out / "log_history.json").write_text(json.dumps(history.log_history, indent=2) + "\n")

    def run(self) -> dict:
        try:
            self.setup()
            self.train()
            self.evaluate()
            self.save()
        except BaseException:
            self.writer.discard()
            raise
        return self.results


def _metric_summary(results: dict) -> dict:
    keys = ("train_loss", "eval_loss_before", "eval_loss", "perplexity_before", "perplexity", *M.ROUGE_KEYS,
            "steps", "epochs")
    return {k: results[k] for k in keys if k in results and not (isinstance(results[k], float) and math.isnan(results[k]))}
