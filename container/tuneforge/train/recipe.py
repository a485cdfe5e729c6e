"""The fine-tuning recipe: setup -> train -> evaluate -> save, on the Hugging Face Trainer.

One explicit object with one method per stage. Data, modeling, metrics and artifacts live in
their own modules; this file only wires them together.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from .. import archives
from ..contract import Paths, train_env
from ..logs import Phases, never_fail
from ..data import Collator, read_channel, select_and_split, tokenize_examples
from ..errors import DataError, ResourceError
from ..modeling import (apply_lora, count_parameters, has_cuda, load_model, load_tokenizer, pick_dtype,
                        read_model_config, resolve_base_model)
from . import distributed as D
from . import metrics as M
from . import stopping
from .artifacts import ModelWriter
from .checkpoints import common_latest_checkpoint, staging_dir

log = logging.getLogger(__name__)


def is_main_process() -> bool:
    return train_env().rank == 0


def _world_size() -> int:
    return D.world_size()


def peak_memory_gib() -> dict:
    """Peak memory so far: this GPU's allocator peak, or this process's resident set on CPU."""
    if has_cuda():
        return {"gpu": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
    import resource

    return {"host_rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def check_adapter_trained(model, steps: int) -> None:
    """LoRA's B matrices start at zero, so after any real step at least one has moved. All still
    zero means the gradients never reached the adapter (a kernel without a backward, frozen
    weights): fail instead of publishing the base model as if it were fine-tuned."""
    weights = [p for name, p in model.named_parameters() if "lora_B" in name and p.numel() > 0]
    if weights and all(not torch.any(p.detach() != 0) for p in weights):
        raise ResourceError(f"training ran {steps} steps but the LoRA adapter did not change (every lora_B weight is "
                            "still zero): no gradient reached it", where="the LoRA adapter",
                            fix="report this with the hardware and package versions; full fine-tuning (peft_type=none) "
                                "or another machine avoids the affected kernel")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_max_length(config, tokenizer, model_config) -> int:
    """max_input_length=-1 means min(1024, what the tokenizer and the model allow)."""
    from ..model_folder import config_context_length, tokenizer_limit

    limits = [1024] + [n for n in (tokenizer_limit(tokenizer), config_context_length(model_config)) if n]
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
        self.phases = Phases(self.results.setdefault("phases", {}))  # logs.py: "<phase>: done in N s"
        from ..report.jobfacts import hyperparameter_facts

        self.results["hyperparameters"] = hyperparameter_facts(config, self.raw_hyperparameters)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.config
        seed_everything(cfg.seed)
        self.phases.begin("loading data")
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

        self.phases.begin("loading the tokenizer and setting up training")
        tokenizer = load_tokenizer(self.base_path, cfg)
        self.tokenizer = tokenizer
        model_config = read_model_config(self.base_path, cfg)
        self.seq2seq = bool(getattr(model_config, "is_encoder_decoder", False))
        self.dtype = pick_dtype(cfg)
        self.ds_config = self.deepspeed_config()
        self.fsdp = D.fsdp_settings(cfg, model_config)
        self.fsdp_active = self.fsdp is not None
        self.sharded = self.fsdp_active or D.zero_stage(self.ds_config) == 3
        self.checkpoint_staging = staging_dir(self.paths)
        # TrainingArguments before the model: it starts the process group (so ranks can agree on
        # stops and checkpoints from here on) and, under ZeRO-3, makes from_pretrained load the
        # weights already partitioned (zero.Init) instead of whole on every rank.
        self.args = self._training_args(has_val=bool(self.val_examples))
        _ = self.args.device
        self.results["parallelism"] = D.parallelism(cfg, self.ds_config)
        log.info("parallelism: %s over %d process(es)", self.results["parallelism"], _world_size())
        self._prepare_checkpoint_staging()

        self.max_len = resolve_max_length(cfg, tokenizer, model_config)
        self.phases.begin(f"tokenizing {len(self.train_examples) + len(self.val_examples or [])} rows")
        self._tokenize()
        from ..preflight import preflight

        longest = max((len(f["input_ids"]) for f in self.train_tokens.features), default=self.max_len)
        need = preflight(self, model_config, min(self.max_len, longest), self.ds_config)
        if need is not None:
            self.results["memory_estimate_gib"] = round(need.total / 2**30, 2)
        self.phases.begin("loading model")
        self.loaded = load_model(self.base_path, cfg, tokenizer=tokenizer, dtype=self.dtype, model_config=model_config)
        if self.data.format == "chat" and self.loaded.seq2seq:
            raise DataError("chat data needs a decoder-only model and the base model is seq2seq",
                            where=str(train_channel), fix="use instruction data for Flan-T5-style models")
        self._report_data(train_channel)

        self.model = apply_lora(self.loaded, cfg) if cfg.use_lora else self.loaded.model
        if cfg.gradient_checkpointing and not self.fsdp_active:  # FSDP checkpoints per wrapped layer itself
            # transformers 5 renamed it (the old name warns); older versions have only the old one
            enable = getattr(self.model, "activation_checkpointing_enable", None) or self.model.gradient_checkpointing_enable
            enable()
            if cfg.use_lora:
                self.model.enable_input_require_grads()
        trainable, total = count_parameters(self.model)
        if self.sharded and D.zero_stage(self.ds_config) == 3:
            total = sum(getattr(p, "ds_numel", p.numel()) for p in self.model.parameters())
            trainable = sum(getattr(p, "ds_numel", p.numel()) for p in self.model.parameters() if p.requires_grad)
        log.info("model %s (%s): %d parameters, %d trainable (%.2f%%)", self.base_path,
                 "seq2seq" if self.loaded.seq2seq else "causal", total, trainable, 100 * trainable / max(1, total))
        self.results["parameters"] = {"total": total, "trainable": trainable}
        self.results["quantization"] = cfg.quantization
        if cfg.quantization != "none":  # what bitsandbytes actually replaced, not just what was asked
            self.results["quantized_layers"] = sum(type(m).__module__.startswith("bitsandbytes")
                                                   for m in self.loaded.model.modules())
        from ..report.jobfacts import describe_job

        self.results["job"] = describe_job(self)  # what the run report shows about the model and data

    def _tokenize(self) -> None:
        cfg = self.config
        tok = dict(max_len=self.max_len, max_out=cfg.max_output_length, seq2seq=self.seq2seq,
                   workers=cfg.preprocessing_num_workers)
        self.train_tokens = tokenize_examples(self.train_examples, self.tokenizer, self.data.prompt, **tok)
        self.val_tokens = tokenize_examples(self.val_examples, self.tokenizer, self.data.prompt, **tok) \
            if self.val_examples else None

    def _prepare_checkpoint_staging(self) -> None:
        """This node's local rank 0 empties the checkpoint staging folder; the others wait."""
        if D.local_rank() == 0:
            import shutil

            shutil.rmtree(self.checkpoint_staging, ignore_errors=True)
            self.checkpoint_staging.mkdir(parents=True, exist_ok=True)
        D.barrier()

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
    def _training_args(self, *, has_val: bool):
        from transformers import Seq2SeqTrainingArguments, TrainingArguments

        from .arguments import training_arguments

        cfg = self.config
        args_class = Seq2SeqTrainingArguments if self.seq2seq else TrainingArguments
        dtype = self.dtype
        fsdp, fsdp_config = self.fsdp or (None, None)
        return args_class(
            **training_arguments(cfg, has_validation=has_val),  # the hyperparameters' part, overrides logged
            # the Trainer writes checkpoints to staging; CommitCheckpoints moves them, complete, into
            # /opt/ml/checkpoints
            output_dir=str(self.checkpoint_staging), save_only_model=False,
            # several hosts have several disks: each keeps a full checkpoint (its ranks' RNG and shards)
            save_on_each_node=D.nnodes() > 1, logging_first_step=True,
            bf16=has_cuda() and dtype == torch.bfloat16, fp16=has_cuda() and dtype == torch.float16,
            use_cpu=not has_cuda(), ddp_backend="gloo" if not has_cuda() and _world_size() > 1 else None,
            remove_unused_columns=False, report_to=[], disable_tqdm=True, include_num_input_tokens_seen="non_padding",
            logging_nan_inf_filter=False,  # a NaN loss must show (FailOnNonFinite), not be averaged away
            deepspeed=self.ds_config, fsdp=fsdp, fsdp_config=fsdp_config,
        )

    def _trainer(self):
        from transformers import EarlyStoppingCallback, PrinterCallback, Seq2SeqTrainer, Trainer

        from .callbacks import CommitCheckpoints, FailOnNonFinite, MetricLines, StopOnSignal
        from .throughput import TokensSeen

        cfg = self.config
        has_val = bool(self.val_tokens and self.val_tokens.features)
        self.stop_callback = StopOnSignal()
        self.commit_callback = CommitCheckpoints(self.checkpoint_staging, self.paths.checkpoint_dir,
                                                 cfg.save_total_limit)
        self.tokens_seen = TokensSeen()
        callbacks = [MetricLines(), FailOnNonFinite(cfg.learning_rate), self.stop_callback, self.commit_callback,
                     self.tokens_seen]
        if self.args.load_best_model_at_end and cfg.early_stopping_patience > 0:
            callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold))
        from .batching import describe, with_length_grouping

        self.results["batching"] = describe(self.train_tokens.features, cfg.group_by_length,
                                            cfg.per_device_train_batch_size, _world_size(), self.args.data_seed)
        self.args.train_sampling_strategy = self.results["batching"]["strategy"]  # "random" when not worth it
        trainer_class = with_length_grouping(Seq2SeqTrainer if self.loaded.seq2seq else Trainer)
        collator, trainer_class = self._speedups(trainer_class)  # packing, Liger, chunked loss
        trainer = trainer_class(model=self.model, args=self.args, train_dataset=self.train_tokens.features,
                                eval_dataset=self.val_tokens.features if has_val else None, data_collator=collator,
                                processing_class=self.tokenizer, callbacks=callbacks)
        trainer.use_chunked_loss = self.results["loss"]["kind"] == "chunked"
        trainer.remove_callback(PrinterCallback)  # MetricLines prints each log once, readably
        return trainer

    def _speedups(self, trainer_class):
        """The collator and Trainer class for the `packing` and `liger_kernel` hyperparameters and
        the chunked loss (train/packing.py, liger.py, loss.py); each choice goes to metrics.json."""
        from .liger import plan_liger
        from .loss import plan_loss, with_chunked_loss
        from .packing import packed_padding_share, plan_packing, with_unpacked_evaluation

        padded = Collator(self.tokenizer.pad_token_id)
        packing = plan_packing(self.config.packing, self.loaded.model, seq2seq=self.loaded.seq2seq,
                               pad_id=self.tokenizer.pad_token_id, max_len=self.max_len)
        liger = plan_liger(self.config.liger_kernel, self.loaded.model.config.model_type, cuda=has_cuda(),
                           seq2seq=self.loaded.seq2seq)
        self.args.use_liger_kernel = liger["enabled"]
        self.results.update(packing=packing.report, liger_kernel=liger, loss=plan_loss(
            self.model, seq2seq=self.loaded.seq2seq, sharded=self.sharded,
            label_smoothing=self.config.label_smoothing_factor, liger_fused=liger["enabled"]))
        if packing.enabled:
            packing.report["padding_share"] = packed_padding_share(
                self.train_tokens.features, packing.collator.capacity, self.results["batching"]["strategy"],
                self.config.per_device_train_batch_size, _world_size(), self.args.data_seed)
            return packing.collator, with_unpacked_evaluation(with_chunked_loss(trainer_class), padded)
        return padded, with_chunked_loss(trainer_class)

    def deepspeed_config(self):
        from .distributed import deepspeed_config

        return deepspeed_config(self.config, self.paths)

    def train(self) -> None:
        self.trainer = self._trainer()
        # what accelerate actually set up (NO, MULTI_CPU, MULTI_GPU, DEEPSPEED, FSDP), beside the plan
        self.results["distributed_type"] = self.trainer.accelerator.distributed_type.value
        from .resume import plan_resume, run_identity

        self.commit_callback.identity = run_identity(self)  # recorded in each checkpoint's manifest
        plan = plan_resume(self, self.commit_callback.identity)  # train/resume.py: compatible, weights-only
        resume = plan.checkpoint
        if plan.superseded:
            self.results["checkpoints_superseded"] = plan.superseded
        if self.trainer.eval_dataset is not None and (self.ds_config or self.fsdp_active):
            # evaluate() before train() makes the Trainer build an inference engine that train()
            # then fails to turn into a training one (DeepSpeed) or wraps twice (FSDP)
            log.warning("the baseline evaluation before training is skipped under %s", self.results["parallelism"])
            self.results["eval_before_skipped"] = "DeepSpeed/FSDP engines are built once per Trainer"
        elif self.trainer.eval_dataset is not None:
            self.phases.begin("baseline evaluation")
            before = self.trainer.evaluate(metric_key_prefix="eval_before")
            self.results["eval_loss_before"] = before["eval_before_loss"]
            self._generate_samples("before")
            self._check_knowledge("before")
        if resume:
            log.info("resuming from %s", resume)
        if plan.finished:
            self._restore_finished(plan)
            return
        self.phases.begin("training")
        start = time.time()
        output = self.trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        runtime = time.time() - start
        if self.stop_callback.stopped_at is not None:
            step = self.stop_callback.stopped_at
            saved = self.paths.checkpoint_dir / f"checkpoint-{step}"
            raise stopping.Stopped(stopping.stopped_message(f"at step {step}", saved))
        self.results["peak_memory_gib"] = peak_memory_gib()
        if self.config.use_lora and not self.sharded and output.global_step > 0:
            check_adapter_trained(self.trainer.accelerator.unwrap_model(self.trainer.model), output.global_step)
        tokens = self.tokens_seen.total
        self.results.update(train_loss=output.training_loss, train_runtime_s=round(runtime, 2),
                            steps=output.global_step, epochs=output.metrics.get("epoch"),
                            train_tokens=tokens, train_tokens_per_second=round(tokens / runtime, 1) if runtime else None,
                            resumed_from=str(resume) if resume else None)
        if has_cuda() and self.results["train_tokens_per_second"]:
            self.results["mfu"] = self._mfu(self.results["train_tokens_per_second"])

    def _restore_finished(self, plan) -> None:
        """The checkpoint already reached max_steps: restore it (weights, state) without training."""
        from .callbacks import AlreadyTrained, SkipTraining

        self.trainer.add_callback(SkipTraining)
        try:
            self.trainer.train(resume_from_checkpoint=str(plan.checkpoint))
        except AlreadyTrained:
            pass
        finally:
            self.trainer.remove_callback(SkipTraining)
        self.results.update(steps=plan.final_step, resumed_from=str(plan.checkpoint), train_loss=None,
                            already_trained=f"the checkpoints had reached max_steps={self.config.max_steps}: "
                                            "nothing was trained in this run")

    def _mfu(self, tokens_per_second: float) -> float | None:
        """Model FLOPs utilization over all GPUs of the job (train/throughput.py)."""
        from ..preflight import config_dim
        from .throughput import flops_per_token, mfu

        model_config, params = self.loaded.model.config, self.results["parameters"]
        mean_len = self.train_tokens.tokens / max(1, len(self.train_tokens.features))
        per_token = flops_per_token(params["total"], params["trainable"],
                                    config_dim(model_config, "num_hidden_layers", "n_layer", "num_layers"),
                                    config_dim(model_config, "hidden_size", "n_embd", "d_model"), mean_len)
        value = mfu(tokens_per_second, per_token, torch.cuda.get_device_name(0), _world_size())
        return round(value, 4) if value is not None else None

    # ------------------------------------------------------------------ evaluate
    def evaluate(self) -> dict:
        r = self.results
        if self.trainer.eval_dataset is not None:
            self.phases.begin("final evaluation")
            r["eval_loss"] = self.trainer.evaluate()["eval_loss"]
            r["perplexity_before"] = M.perplexity(r.get("eval_loss_before"))
            r["perplexity"] = M.perplexity(r["eval_loss"])
            self._generate_samples("after")
            self._check_knowledge("after")
        r["train_perplexity"] = M.perplexity(r.get("train_loss"))
        if is_main_process():
            for name in ("train_loss", "train_perplexity", "eval_loss", "perplexity", *M.SCORE_KEYS):
                if isinstance(r.get(name), (int, float)):
                    M.print_metric(f"final_{name}", r[name])
            if "eval_loss" in r:  # the line JumpStart's Llama metric definitions match
                print(f" eval_ppl=tensor({r['perplexity']:.4f}) eval_epoch_loss=tensor({r['eval_loss']:.4f})",
                      flush=True)
        return r

    def _generation_ranks(self) -> str:
        """main: rank 0 generates alone (whole weights on every rank); all: every rank generates in
        lockstep (ZeRO-3 gathers each layer's shards collectively); skip: not supported here."""
        if self.fsdp_active:
            return "skip"
        return "all" if self.sharded and _world_size() > 1 else "main"

    def _generate_samples(self, stage: str) -> None:
        """Greedy answers on capped validation prompts; ROUGE against the references."""
        if self.config.rouge_samples == 0 or self.data.format == "domain":
            return
        ranks = self._generation_ranks()
        if ranks == "skip":
            if stage == "before":
                log.warning("ROUGE skipped: generating from FSDP-sharded weights is not supported; "
                            "evaluate the saved model instead")
                self.results["rouge_skipped"] = "FSDP shards the weights; generation needs them whole"
            return
        if ranks == "main" and not is_main_process():
            return
        pairs = M.generation_pairs(self.val_examples, self.tokenizer, self.data.prompt, self.config.rouge_samples)
        if not pairs:
            return
        answers = self._greedy_answers([p for p, _ in pairs], self.config.max_output_length)
        if not is_main_process():
            return
        scores = M.rouge(answers, [ref for _, ref in pairs])
        if stage == "before":
            self.results["rouge_before"] = scores
            self.samples = [{"prompt": p, "reference": ref, "before": a} for (p, ref), a in zip(pairs, answers)]
        else:
            self.results.update(scores)
            if not self.samples:  # no "before" pass (DeepSpeed/FSDP: see eval_before_skipped)
                self.samples = [{"prompt": p, "reference": ref, "before": None} for p, ref in pairs]
            for sample, answer in zip(self.samples, answers):
                sample["after"] = answer

    def _greedy_answers(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy answers of the model being trained; it is back in training mode afterwards."""
        model = self.trainer.accelerator.unwrap_model(self.trainer.model) if hasattr(self, "trainer") else self.model
        answers = M.generate(model, self.tokenizer, prompts, seq2seq=self.loaded.seq2seq,
                             max_new_tokens=max_new_tokens, max_input_length=self.max_len,
                             batch_size=max(self.config.eval_batch_size, 8))
        model.train()
        return answers

    def _check_knowledge(self, stage: str) -> None:
        """The general-knowledge questions (train/knowledge.py), before and after training."""
        from . import knowledge

        if not self.config.knowledge_check or self._generation_ranks() == "skip":
            return
        if self._generation_ranks() == "main" and not is_main_process():
            return
        prompts = knowledge.prompts(self.tokenizer, self.data.prompt, self.data.format)
        if prompts is None:
            return
        answers = self._greedy_answers(prompts, knowledge.MAX_NEW_TOKENS)
        if is_main_process():
            result = knowledge.score(answers)
            self.results.setdefault("general_knowledge", {})[stage] = result
            log.info("general knowledge %s training: %d of %d right", stage, result["right"], result["asked"])

    # ------------------------------------------------------------------ save
    def save(self) -> None:
        """Rank 0 writes model/ (through staging) and output/data/."""
        from .saving import save_model

        self.phases.begin("saving")
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
        self.phases.end()
        self.write_reports()
        from ..report import write_job_report

        write_job_report(self.paths.base)  # never raises: a report error is logged, the model stands

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
        from .resume import weights_only_loads

        try:
            with weights_only_loads():  # checkpoints come from S3: no torch.load may run code (resume.py)
                return self._run()
        finally:
            archives.cleanup()

    def _run(self) -> dict:
        try:
            self.setup()
            if stopping.agreed():
                latest = common_latest_checkpoint(self.paths.checkpoint_dir)
                raise stopping.Stopped(stopping.stopped_message("before training started", latest))
            self.train()
            if stopping.agreed():  # training finished; its last step is checkpointed
                latest = common_latest_checkpoint(self.paths.checkpoint_dir)
                raise stopping.Stopped(stopping.stopped_message(
                    f"after training finished (step {self.results.get('steps')}), before the model was saved", latest))
            self.evaluate()
            self.save()
        except BaseException:
            self.writer.discard()
            self.phases.end()
            if is_main_process():  # what the job got to, for output/data and the report after the failure
                never_fail(self.write_reports, "writing metrics.json so far")
            raise
        return self.results


def _metric_summary(results: dict) -> dict:
    keys = ("train_loss", "eval_loss_before", "eval_loss", "perplexity_before", "perplexity", *M.SCORE_KEYS,
            "steps", "epochs")
    summary = {k: results[k] for k in keys if k in results and not (isinstance(results[k], float) and math.isnan(results[k]))}
    knowledge = {stage: r["score"] for stage, r in results.get("general_knowledge", {}).items()}
    if knowledge:
        summary["general_knowledge"] = knowledge
    return summary
