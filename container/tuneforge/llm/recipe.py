"""The fine-tuning recipe: setup -> train -> evaluate -> save, on the Hugging Face Trainer.

Read it top to bottom: `run` calls the four stages in order. `setup` builds three explicit,
frozen values (what the data is, how the run is spread and which model trains) instead of
setting attributes as it goes; the later stages read them. Data, modeling, metrics and
artifacts live in their own modules; this file only wires them together.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .. import archives
from ..contract import Paths, train_env
from ..logs import Phases, never_fail
from ..metrics_file import write_metrics
from ..model_folder import model_name
from ..data import Collator, arrow, read_job_channels, select_and_split, validation_overlap
from ..data.registry import data_format
from ..errors import DataError, ResourceError
from ..modeling import (apply_lora, count_parameters, has_cuda, load_model, load_tokenizer, pick_dtype,
                        read_model_config, resolve_base_model)
from ..data.prompt import PromptFormat
from ..job import distributed
from . import metrics
from ..job import stopping
from ..job.artifacts import ModelWriter
from ..job.checkpoints import common_latest_checkpoint, staging_dir
from .plan import Outcome, RunPlan

log = logging.getLogger(__name__)

# ROUGE generation starts no new batch after this many seconds: the prompts answered by then are
# scored (a slow model or long max_output_length must not hold the job for hours)
ROUGE_TIME_BUDGET_S = 300.0
FINAL_EVALUATION_STOP = "during the final evaluation, before the model was saved"
EVAL_MAX_NEW_TOKENS = 64  # longest answer of an evaluation task's generation item
EVAL_TIME_BUDGET_S = 1800.0  # per stage (before, after): tasks not begun by then are reported unscored


@dataclass(frozen=True)
class DataBundle:
    """The training data, read, split and tokenized, with how it was read."""
    tokenizer: Any
    prompt: Any                       # data.PromptFormat: how rows become prompts and answers
    format: str                       # instruction, chat or domain
    files: list
    validation_source: str            # "channel" or "split <ratio>"
    max_len: int
    val_examples: list | None         # the training rows' text is not kept past tokenizing
    train_tokens: Any                 # data.TokenizedData (features: a memory-mapped Dataset; report())
    val_tokens: Any | None
    rows_format: str = ""             # the preference recipe's rows: preference (pairs) or unpaired


@dataclass(frozen=True)
class EngineBundle:
    """How the run is spread and stored: precision, DeepSpeed/FSDP, and the TrainingArguments."""
    seq2seq: bool                     # from the model's config, before the weights are loaded
    parallelism: str                  # distributed.parallelism(): none, ddp, deepspeed zero-N, fsdp
    dtype: Any
    ds_config: dict | None
    fsdp: tuple | None                # (fsdp, fsdp_config) for TrainingArguments, or None
    sharded: bool                     # FSDP or ZeRO-3: no rank holds every weight whole
    args: Any                         # (Seq2Seq)TrainingArguments, built once with their final values
    checkpoint_staging: Path
    liger: dict                       # llm/liger.py's decision, for metrics.json (use_liger_kernel in args)

    @property
    def fsdp_active(self) -> bool:
        return self.fsdp is not None


@dataclass(frozen=True)
class ModelBundle:
    """The loaded base (`loaded`: model, family, seq2seq) and the module that trains (LoRA-wrapped or not)."""
    base_path: Path
    loaded: Any                       # modeling.LoadedModel
    module: Any
    total_params: int
    trainable_params: int


@dataclass(frozen=True)
class Prepared:
    data: DataBundle
    engine: EngineBundle
    model: ModelBundle
    plan: RunPlan | None = None       # set by setup's last step, from the three bundles


@dataclass(frozen=True)
class _Source:
    """What `setup` read before tokenizing; the training rows only on the node's reading rank."""
    channel: Path
    format: str
    files: list
    prompt: Any                       # data.PromptFormat
    validation_channel: bool          # validation rows from their own channel, not a split
    n_train: int
    train_examples: list              # empty on the node's other ranks (rows_handoff.py)
    val_examples: list | None


def is_main_process() -> bool:
    return train_env().rank == 0


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
        from ..report.jobfacts import hyperparameter_facts

        self.paths = paths
        self.config = config
        self.results: dict = {}
        self.samples: list[dict] = []
        self.writer = ModelWriter(paths)
        self.phases = Phases(self.results.setdefault("phases", {}))  # logs.py: "<phase>: done in N s"
        self.prepared: Prepared | None = None  # set once, by run(), from setup()
        self.trainer = None                    # set once, by train()
        self.outcome = Outcome()               # replaced as training and evaluation measure
        self.eval_tasks: list = []              # the evaluation channel's tasks, read by setup()
        self.results["hyperparameters"] = hyperparameter_facts(config, raw_hyperparameters or {})

    # ------------------------------------------------------------------ run: the stages in order
    def run(self) -> dict:
        """The job, its curves and final metrics sent to TensorBoard/MLflow where asked (tuneforge/trackers)."""
        from ..trackers import job_trackers

        with job_trackers(self.paths, self.config, task="text-generation", report=self.paths.output_data_dir,
                          final=lambda: metrics.tracker_finals(self.results)) as self.trackers:
            return self._run_and_gate()

    def _run_and_gate(self) -> dict:
        from ..job.resume import weights_only_loads

        try:
            with weights_only_loads():  # checkpoints come from S3: no torch.load may run code (resume.py)
                self._run()
        finally:
            archives.cleanup()
        if is_main_process():  # after model/ is saved: a missed gate keeps the model and fails the job
            from ..evaluation.gate import enforce, job_verdict

            verdict = job_verdict(dict(self.outcome.scores_after), dict(self.outcome.scores_before),
                                  self.config.eval_min_score, self.config.eval_max_regression)
            if verdict is not None:
                self.results["evaluation_gate"] = verdict
            try:
                enforce(verdict)
            finally:
                never_fail(self.write_reports, "writing metrics.json with the gate's verdict")
        return self.results

    def _run(self) -> dict:
        try:
            self.prepared = self.setup()
            self.stop_if_asked("before training started")
            self.train()
            steps = self.outcome.steps  # training finished; its last step is checkpointed
            self.stop_if_asked(f"after training finished (step {steps}), before the model was saved")
            with stopping.during(stopping.FINAL_EVALUATION):
                self.evaluate()
            self.stop_if_asked(FINAL_EVALUATION_STOP)
            with stopping.during(stopping.MODEL_SAVE):
                self.save()
            if stopping.requested():
                log.warning("%s arrived during the model save: the save was finished, model/ is complete and the job "
                            "ends normally", stopping.requested())
        except BaseException:
            self.writer.discard()
            self.phases.end()
            if is_main_process():  # what the job got to, for output/data and the report after the failure
                never_fail(self.write_reports, "writing metrics.json so far")
            raise
        return self.results

    def stop_if_asked(self, when: str) -> None:
        """Stop (exit 143, model/ untouched) if any rank got SIGTERM; a collective."""
        if stopping.agreed():
            latest = common_latest_checkpoint(self.paths.checkpoint_dir)
            raise stopping.Stopped(stopping.stopped_message(when, latest))

    # ------------------------------------------------------------------ setup
    def setup(self) -> Prepared:
        """Data read and tokenized, the engine settings, the model loaded (and LoRA applied)."""
        from ..report.jobfacts import describe_job

        cfg = self.config
        seed_everything(cfg.seed)
        self.phases.begin("loading data")
        self.eval_tasks = load_eval_tasks(self.paths.evaluation_channel())  # a bad task file fails here
        base_path = resolve_base_model(self.paths, cfg)
        source = self._read_data()
        self.phases.begin("loading the tokenizer and setting up training")
        tokenizer = load_tokenizer(base_path, cfg)
        model_config = read_model_config(base_path, cfg)
        engine = self._setup_engine(model_config, has_val=bool(source.val_examples))
        data = self._tokenize(source, tokenizer, resolve_max_length(cfg, tokenizer, model_config), engine.seq2seq)
        channel = source.channel
        del source  # the rows' text (on every rank) is not needed past tokenizing: freed before the weights load
        self._preflight(data, engine, model_config)
        self.phases.begin("loading model")
        loaded = load_model(base_path, cfg, tokenizer=tokenizer, dtype=engine.dtype, model_config=model_config)
        if data_format(data.format).conversational and loaded.seq2seq:
            raise DataError("chat data needs a decoder-only model and the base model is seq2seq",
                            where=str(channel), fix="use instruction data for Flan-T5-style models")
        self._report_data(data, channel)
        model = self._setup_model(base_path, loaded, engine)
        prepared = Prepared(data=data, engine=engine, model=model)
        self.results["job"] = describe_job(self._flat_view(prepared))  # what the run report shows
        return dataclasses.replace(prepared, plan=self._plan_run(prepared))

    def _read_data(self) -> _Source:
        """The rows, read by the node's local main process; the node's other ranks take the
        validation rows and what describes the data from it (rows_handoff.py)."""
        from .rows_handoff import handoff_path, publish, run_token, wait_for

        token = run_token()
        if token is None:
            return self._read_rows()
        path = handoff_path(self.paths.base, token)
        if distributed.local_rank() == 0:
            source = self._read_rows()
            publish(path, channel=source.channel, fmt=source.format, files=source.files,
                    prompt=source.prompt.to_dict(), validation_channel=source.validation_channel,
                    n_train=source.n_train, val_examples=source.val_examples)
            return source
        summary = wait_for(path)
        log.info("rank %d took the data as read by the node's local main process: %d training rows, %s validation rows",
                 distributed.rank(), summary["n_train"], len(summary["val_examples"] or []))
        return _Source(Path(summary["channel"]), summary["format"], summary["files"],
                       PromptFormat.from_dict(summary["prompt"]), summary["validation_channel"], summary["n_train"],
                       [], summary["val_examples"])

    def _read_rows(self) -> _Source:
        """The train channel (and a validation channel if any), split into train and validation rows."""
        cfg = self.config
        channel = self.paths.train_channel()
        data, val_data = read_job_channels(self.paths, cfg)
        train_examples, val_examples = select_and_split(data.examples, val_data.examples if val_data else None, cfg)
        overlap = validation_overlap(train_examples, val_examples or [])
        if overlap:  # metrics.json and the run report carry it too
            self.results["validation_overlap"] = overlap
            log.warning("%s (first: %s)", overlap["note"], ", ".join(overlap["first"]))
        log.info("rank %d read %d training and %d validation rows from %s", distributed.rank(), len(train_examples),
                 len(val_examples or []), channel)
        return _Source(channel, data.format, data.files, data.prompt, val_data is not None, len(train_examples),
                       train_examples, val_examples)

    def _setup_engine(self, model_config, *, has_val: bool) -> EngineBundle:
        """Precision, DeepSpeed/FSDP and the TrainingArguments. They come before the model: they
        start the process group (so ranks can agree on stops and checkpoints from here on) and,
        under ZeRO-3, make from_pretrained load the weights already partitioned (zero.Init)
        instead of whole on every rank."""
        cfg = self.config
        seq2seq = bool(getattr(model_config, "is_encoder_decoder", False))
        dtype = pick_dtype(cfg)
        ds_config = distributed.deepspeed_config(cfg, self.paths)
        fsdp = distributed.fsdp_settings(cfg, model_config)
        staging = staging_dir(self.paths)
        liger = self._plan_liger(model_config, seq2seq)
        args = self._training_args(seq2seq=seq2seq, dtype=dtype, ds_config=ds_config, fsdp=fsdp,
                                   staging=staging, has_val=has_val, liger=liger["enabled"])
        _ = args.device
        parallelism = distributed.parallelism(cfg, ds_config)
        self.results["parallelism"] = parallelism
        log.info("parallelism: %s over %d process(es)", parallelism, distributed.world_size())
        _prepare_checkpoint_staging(staging)
        return EngineBundle(seq2seq=seq2seq, parallelism=parallelism, dtype=dtype, ds_config=ds_config, fsdp=fsdp,
                            sharded=fsdp is not None or distributed.zero_stage(ds_config) == 3, args=args,
                            checkpoint_staging=staging, liger=liger)

    def _plan_liger(self, model_config, seq2seq: bool) -> dict:
        """The `liger_kernel` hyperparameter against the model's family and the device (llm/liger.py)."""
        from .liger import plan_liger

        return plan_liger(self.config.liger_kernel, getattr(model_config, "model_type", "?"), cuda=has_cuda(),
                          seq2seq=seq2seq)

    def _training_args(self, *, seq2seq: bool, dtype, ds_config, fsdp, staging: Path, has_val: bool, liger: bool):
        from transformers import Seq2SeqTrainingArguments, TrainingArguments

        from .arguments import training_arguments

        args_class = Seq2SeqTrainingArguments if seq2seq else TrainingArguments
        fsdp, fsdp_config = fsdp or (None, None)
        return args_class(
            **training_arguments(self.config, has_validation=has_val),  # the hyperparameters' part, overrides logged
            # the Trainer writes checkpoints to staging; CommitCheckpoints moves them, complete, into
            # /opt/ml/checkpoints
            output_dir=str(staging), save_only_model=False,
            # several hosts have several disks: each keeps a full checkpoint (its ranks' RNG and shards)
            save_on_each_node=distributed.nnodes() > 1, logging_first_step=True,
            bf16=has_cuda() and dtype == torch.bfloat16, fp16=has_cuda() and dtype == torch.float16,
            use_cpu=not has_cuda(), ddp_backend="gloo" if not has_cuda() and distributed.world_size() > 1 else None,
            remove_unused_columns=False, report_to=[], disable_tqdm=True, include_num_input_tokens_seen="non_padding",
            logging_nan_inf_filter=False,  # a NaN loss must show (FailOnNonFinite), not be averaged away
            deepspeed=ds_config, fsdp=fsdp, fsdp_config=fsdp_config, use_liger_kernel=liger,
        )

    def _tokenize(self, source: _Source, tokenizer, max_len: int, seq2seq: bool) -> DataBundle:
        cfg = self.config
        self.phases.begin(f"tokenizing {source.n_train + len(source.val_examples or [])} rows")
        options = dict(max_len=max_len, max_out=cfg.max_output_length, seq2seq=seq2seq,
                       workers=cfg.preprocessing_num_workers)
        prompt = source.prompt
        train_tokens = self._tokenized_once_per_node("train", source.train_examples, tokenizer, prompt, options)
        val_tokens = self._tokenized_once_per_node("validation", source.val_examples, tokenizer, prompt, options) \
            if source.val_examples else None
        return DataBundle(
            tokenizer=tokenizer, prompt=prompt, format=source.format, files=source.files,
            validation_source="channel" if source.validation_channel else f"split {cfg.validation_split_ratio}",
            max_len=max_len, val_examples=source.val_examples,
            train_tokens=train_tokens, val_tokens=val_tokens)

    def _tokenized_once_per_node(self, name: str, examples: list, tokenizer, prompt, options: dict):
        """The node's local main process tokenizes `examples` into a node-local Arrow folder while
        the node's other ranks wait; then every rank maps that folder (data/arrow.py)."""
        folder = arrow.cache_folder(self.paths.base, name)
        if distributed.local_rank() == 0:
            arrow.build_or_reuse(folder, examples, tokenizer, prompt, **options)
        distributed.barrier()
        tokens = arrow.open_tokenized(folder)
        log.info("rank %d read the tokenized data from %s (%d sequences, fingerprint %s)",
                 distributed.rank(), folder, tokens.sequences, tokens.fingerprint)
        return tokens

    def _preflight(self, data: DataBundle, engine: EngineBundle, model_config) -> None:
        """On GPUs, the memory estimate before loading the weights (llm/preflight.py)."""
        from .preflight import PlanInputs, preflight
        from .batching import column_lengths

        longest = max(column_lengths(data.train_tokens.features, "input_ids"), default=data.max_len)
        inputs = PlanInputs(config=self.config, dtype=engine.dtype, fsdp_active=engine.fsdp_active)
        need = preflight(inputs, model_config, min(data.max_len, longest), engine.ds_config)
        if need is not None:
            self.results["memory_estimate_gib"] = round(need.total / 2**30, 2)

    def _report_data(self, data: DataBundle, channel: Path) -> None:
        train, val = data.train_tokens.report(), data.val_tokens.report() if data.val_tokens else None
        self.results["data"] = {"format": data.format, "files": data.files, "max_input_length": data.max_len,
                                "validation_source": data.validation_source,
                                "train": train, "validation": val, "prompt": data.prompt.to_dict()}
        log.info("data: format=%s from %s; train rows=%d sequences=%d truncated=%d trainable share=%.1f%%; "
                 "validation rows=%s", data.format, channel, train["rows"], train["sequences"],
                 train["rows_truncated"], 100 * train["trainable_share"], val["rows"] if val else 0)
        if train["rows_truncated"]:
            log.warning("%d training rows were longer than max_input_length=%d and were truncated (first: %s)",
                        train["rows_truncated"], data.max_len, ", ".join(train["truncated_examples"][:3]))

    def _setup_model(self, base_path: Path, loaded, engine: EngineBundle) -> ModelBundle:
        """LoRA (if asked) and gradient checkpointing on the loaded base; its parameter counts."""
        cfg = self.config
        module = apply_lora(loaded, cfg) if cfg.use_lora else loaded.model
        if cfg.gradient_checkpointing and not engine.fsdp_active:  # FSDP checkpoints per wrapped layer itself
            # transformers 5 renamed it (the old name warns); older versions have only the old one
            enable = getattr(module, "activation_checkpointing_enable", None) or module.gradient_checkpointing_enable
            enable()
            if cfg.use_lora:
                module.enable_input_require_grads()
        trainable, total = count_parameters(module)
        if engine.sharded and distributed.zero_stage(engine.ds_config) == 3:
            total = sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())
            trainable = sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters() if p.requires_grad)
        log.info("model %s (%s): %d parameters, %d trainable (%.2f%%)", base_path,
                 "seq2seq" if loaded.seq2seq else "causal", total, trainable, 100 * trainable / max(1, total))
        self.results["parameters"] = {"total": total, "trainable": trainable}
        self.results["quantization"] = cfg.quantization
        if cfg.quantization != "none":  # what bitsandbytes actually replaced, not just what was asked
            self.results["quantized_layers"] = sum(type(m).__module__.startswith("bitsandbytes")
                                                   for m in loaded.model.modules())
        return ModelBundle(base_path=base_path, loaded=loaded, module=module, total_params=total,
                           trainable_params=trainable)

    def _flat_view(self, prepared: Prepared) -> SimpleNamespace:
        """The flat names report/jobfacts.py and job/resume.py read about this run."""
        data, engine, model = prepared.data, prepared.engine, prepared.model
        return SimpleNamespace(config=self.config, paths=self.paths, plan=prepared.plan, args=engine.args,
                               dtype=engine.dtype, ds_config=engine.ds_config, fsdp_active=engine.fsdp_active,
                               base_path=model.base_path, loaded=model.loaded, tokenizer=data.tokenizer,
                               train_tokens=data.train_tokens)

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        from ..job.resume import plan_resume
        from .identity import run_identity

        prepared = self.prepared
        self.trainer, callbacks = self._trainer(prepared)
        # what accelerate actually set up (NO, MULTI_CPU, MULTI_GPU, DEEPSPEED, FSDP), beside the plan
        self.results["distributed_type"] = self.trainer.accelerator.distributed_type.value
        view = self._flat_view(prepared)
        callbacks.commit.identity = run_identity(view)  # recorded in each checkpoint's manifest
        plan = plan_resume(view, callbacks.commit.identity)  # job/resume.py: compatible, weights-only
        resume = plan.checkpoint
        if plan.superseded:
            self.results["checkpoints_superseded"] = plan.superseded
        self._baseline_evaluation(prepared.engine)
        self._score_tasks("before")
        if resume:
            log.info("resuming from %s", resume)
        if plan.finished:
            self._restore_finished(plan)
            return
        self.phases.begin("training")
        start = time.time()
        output = self.trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        runtime = time.time() - start
        if callbacks.stop.stopped_at is not None:
            step = callbacks.stop.stopped_at
            saved = self.paths.checkpoint_dir / f"checkpoint-{step}"
            raise stopping.Stopped(stopping.stopped_message(f"at step {step}", saved))
        self._record_training(output, runtime, resume, callbacks.tokens_seen.total)
        self.results["checkpoints"] = callbacks.commit.summary()

    def _trainer(self, prepared: Prepared):
        """The Trainer and the callbacks the recipe reads back (stop, commit, tokens seen)."""
        from transformers import EarlyStoppingCallback

        from .callbacks import CommitCheckpoints, FailOnNonFinite, MetricLines, StopOnSignal, TrackerLogs
        from .throughput import TokensSeen
        from .trainer import TuneforgeSeq2SeqTrainer, TuneforgeTrainer

        cfg, data, engine, args = self.config, prepared.data, prepared.engine, prepared.engine.args
        has_val = bool(data.val_tokens and data.val_tokens.features)
        kept = SimpleNamespace(stop=StopOnSignal(), tokens_seen=TokensSeen(), commit=CommitCheckpoints(
            engine.checkpoint_staging, self.paths.checkpoint_dir, cfg.save_total_limit, writer=self._checkpoint_writer()))
        callbacks = [MetricLines(), FailOnNonFinite(cfg.learning_rate), kept.stop, kept.commit, kept.tokens_seen,
                     TrackerLogs(self.trackers)]
        if args.load_best_model_at_end and cfg.early_stopping_patience > 0:
            callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold))
        self.results["batching"] = prepared.plan.batching
        collator, plan = self._trainer_plan(prepared, kept.commit)
        trainer_class = TuneforgeSeq2SeqTrainer if prepared.model.loaded.seq2seq else TuneforgeTrainer
        trainer = trainer_class(model=prepared.model.module, args=args, train_dataset=data.train_tokens.features,
                                eval_dataset=data.val_tokens.features if has_val else None, data_collator=collator,
                                processing_class=data.tokenizer, callbacks=callbacks, plan=plan)
        return trainer, kept

    def _checkpoint_writer(self):
        from ..job.background_checkpoints import CheckpointWriter

        why_not = self.prepared.plan.checkpoint_writer_why_not
        return CheckpointWriter(enabled=not why_not, why_not=why_not)

    def _trainer_plan(self, prepared: Prepared, commit):
        """The training collator and the TrainerPlan, from the run plan; its choices go to
        metrics.json (Liger's was made with the arguments)."""
        from .trainer import TrainerPlan

        plan, padded = prepared.plan, Collator(prepared.data.tokenizer.pad_token_id)
        self.results.update(packing=plan.packing.report, liger_kernel=plan.liger, loss=plan.loss)
        trainer_plan = TrainerPlan(length_grouping=plan.length_grouping, chunked_loss=plan.chunked_loss,
                                   eval_collator=padded if plan.packed else None, checkpoint_commit=commit)
        return (plan.packing.collator if plan.packed else padded), trainer_plan

    # ------------------------------------------------------------------ the run plan (setup's last step)
    def _plan_run(self, prepared: Prepared) -> RunPlan:
        """What the later stages decide with: the engine's choices, the checkpoint writer, and for
        SFT the batching (length grouping where describe() found it worth it), the `packing`
        hyperparameter and the chunked loss (llm/batching.py, packing.py, loss.py)."""
        from .batching import describe
        from .loss import plan_loss
        from .packing import packed_padding_share, plan_packing

        cfg, data, engine, loaded = self.config, prepared.data, prepared.engine, prepared.model.loaded
        batching = describe(data.train_tokens.features, cfg.group_by_length, cfg.per_device_train_batch_size,
                            distributed.world_size(), engine.args.data_seed)
        packing = plan_packing(cfg.packing, loaded.model, seq2seq=loaded.seq2seq,
                               pad_id=data.tokenizer.pad_token_id, max_len=data.max_len)
        loss = plan_loss(prepared.model.module, seq2seq=loaded.seq2seq, sharded=engine.sharded,
                         label_smoothing=cfg.label_smoothing_factor, liger_fused=engine.liger["enabled"])
        if packing.enabled:
            packing.report["padding_share"] = packed_padding_share(
                data.train_tokens.features, packing.collator.capacity, batching["strategy"],
                cfg.per_device_train_batch_size, distributed.world_size(), engine.args.data_seed)
        return dataclasses.replace(self._engine_plan(engine), batching=batching, packing=packing, loss=loss)

    def _engine_plan(self, engine: EngineBundle) -> RunPlan:
        """Checkpoints are written in the background (`async_checkpoint`) where a copy of the state
        is all it takes: full fine-tuning, one host, no DeepSpeed or FSDP (their states are sharded)."""
        sharded_state = bool(engine.ds_config) or engine.fsdp_active
        why_not = ("async_checkpoint=false" if not self.config.async_checkpoint
                   else "LoRA checkpoints are small" if self.config.use_lora
                   else "DeepSpeed and FSDP write their own sharded checkpoints" if sharded_state
                   else "several hosts" if distributed.nnodes() > 1 else "")
        return RunPlan(parallelism=engine.parallelism, sharded_state=sharded_state, liger=engine.liger,
                       checkpoint_writer_why_not=why_not)

    def _baseline_evaluation(self, engine: EngineBundle) -> None:
        """Validation loss, ROUGE and general knowledge of the untouched model."""
        if self.trainer.eval_dataset is None:
            return
        self.phases.begin("baseline evaluation")
        if engine.ds_config or engine.fsdp_active:
            # evaluate() before train() makes the Trainer build an inference engine that train()
            # then fails to turn into a training one (DeepSpeed) or wraps twice (FSDP)
            log.warning("the validation loss before training is not measured under %s", engine.parallelism)
            self.results["eval_before_skipped"] = "DeepSpeed/FSDP engines are built once per Trainer"
        else:
            before = self.trainer.evaluate(metric_key_prefix="eval_before")
            self._measured(eval_loss_before=before["eval_before_loss"])
        self._generate_samples("before")
        self._check_knowledge("before")

    def _record_training(self, output, runtime: float, resume, tokens: int) -> None:
        """Loss, steps, throughput and memory of the finished training into the results."""
        self.results["peak_memory_gib"] = peak_memory_gib()
        if self.config.use_lora and not self.prepared.engine.sharded and output.global_step > 0:
            check_adapter_trained(self.trainer.accelerator.unwrap_model(self.trainer.model), output.global_step)
        per_second = round(tokens / runtime, 1) if runtime else None
        self.results.update(train_loss=output.training_loss, train_runtime_s=round(runtime, 2),
                            steps=output.global_step, epochs=output.metrics.get("epoch"),
                            train_tokens=tokens, train_tokens_per_second=per_second,
                            resumed_from=str(resume) if resume else None)
        self.outcome = dataclasses.replace(self.outcome, train_loss=output.training_loss, steps=output.global_step,
                                           train_tokens_per_second=per_second)
        if has_cuda() and per_second:
            self.results["mfu"] = self._mfu(per_second)

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
        self.outcome = dataclasses.replace(self.outcome, steps=plan.final_step, train_loss=None)

    def _measured(self, **values) -> None:
        """An evaluation loss into the outcome and, under the same key, into metrics.json."""
        self.outcome = dataclasses.replace(self.outcome, **values)
        self.results.update(values)

    def _mfu(self, tokens_per_second: float) -> float | None:
        """Model FLOPs utilization over all GPUs of the job (llm/throughput.py)."""
        from .preflight import config_dim
        from .throughput import flops_per_token, mfu

        model, train_tokens = self.prepared.model, self.prepared.data.train_tokens
        model_config = model.loaded.model.config
        mean_len = train_tokens.tokens / max(1, len(train_tokens.features))
        per_token = flops_per_token(model.total_params, model.trainable_params,
                                    config_dim(model_config, "num_hidden_layers", "n_layer", "num_layers"),
                                    config_dim(model_config, "hidden_size", "n_embd", "d_model"), mean_len)
        value = mfu(tokens_per_second, per_token, torch.cuda.get_device_name(0), distributed.world_size())
        return round(value, 4) if value is not None else None

    # ------------------------------------------------------------------ evaluate
    def evaluate(self) -> dict:
        self._final_evaluation()
        self._score_tasks("after")
        self.results["train_perplexity"] = metrics.perplexity(self.outcome.train_loss)
        if is_main_process():
            metrics.print_final_lines(self.results, ("train_loss", "train_perplexity", "eval_loss", "perplexity",
                                                     *metrics.SCORE_KEYS))
            if self.outcome.eval_loss is not None:  # the line JumpStart's Llama metric definitions match
                print(f" eval_ppl=tensor({metrics.perplexity(self.outcome.eval_loss):.4f}) "
                      f"eval_epoch_loss=tensor({self.outcome.eval_loss:.4f})", flush=True)
        return self.results

    def _final_evaluation(self) -> None:
        """The validation loss of the model that is saved (SIGTERM stops it), what the recipe derives
        from it (_after_final_loss), the greedy answers and the general-knowledge check."""
        from .callbacks import StopFinalEvaluation

        if self.trainer.eval_dataset is None:
            return
        self.phases.begin("final evaluation")
        self.trainer.add_callback(StopFinalEvaluation(lambda: self.stop_if_asked(FINAL_EVALUATION_STOP)))
        self._measured(eval_loss=self.trainer.evaluate()["eval_loss"])
        self.stop_if_asked(FINAL_EVALUATION_STOP)  # several ranks agree here, before generating
        self._after_final_loss()
        self._generate_samples("after")
        self._check_knowledge("after")

    def _after_final_loss(self) -> None:
        self.results["perplexity_before"] = metrics.perplexity(self.outcome.eval_loss_before)
        self.results["perplexity"] = metrics.perplexity(self.outcome.eval_loss)

    def _generation_ranks(self) -> str:
        """main: rank 0 generates alone (whole weights on every rank); all: every rank generates in
        lockstep (ZeRO-3 and FSDP gather each layer's shards collectively: llm/lockstep.py)."""
        return "all" if self.prepared.engine.sharded and distributed.world_size() > 1 else "main"

    def _sharded_forward(self, model):
        """llm/lockstep.py: before DeepSpeed's engine exists, ZeRO-3's partitioned weights are
        gathered module by module here; FSDP2 modules get generate's rank syncing."""
        from .lockstep import sharded_forward

        ds_config = self.prepared.engine.ds_config
        unbuilt = self.trainer is None or self.trainer.deepspeed is None
        return sharded_forward(model, gather_zero3=distributed.zero_stage(ds_config) == 3 and unbuilt)

    def _generate_samples(self, stage: str) -> None:
        """Greedy answers on capped validation prompts, within ROUGE_TIME_BUDGET_S; ROUGE of the
        answered ones against their references."""
        data = self.prepared.data
        if self.config.rouge_samples == 0 or not data_format(data.format).generates:
            return
        if self._generation_ranks() == "main" and not is_main_process():
            return
        pairs = metrics.generation_pairs(data.val_examples, data.tokenizer, data.prompt, self.config.rouge_samples)
        if not pairs:
            return
        answers = self._greedy_answers([p for p, _ in pairs], self.config.max_output_length,
                                       deadline=time.monotonic() + ROUGE_TIME_BUDGET_S)
        if not is_main_process():
            return
        log.info("ROUGE %s training: scored %d of %d prompts%s", stage, len(answers), len(pairs),
                 "" if len(answers) == len(pairs) else f" (the {ROUGE_TIME_BUDGET_S:.0f} s budget ran out)")
        self._record_samples(stage, pairs[:len(answers)], answers)

    def _record_samples(self, stage: str, pairs: list[tuple[str, str]], answers: list[str]) -> None:
        scores = metrics.rouge(answers, [ref for _, ref in pairs])
        if stage == "before":
            self.results["rouge_before"] = scores
            self.samples = [{"prompt": p, "reference": ref, "before": a} for (p, ref), a in zip(pairs, answers)]
            return
        self.results.update(scores)
        if not self.samples:  # no "before" pass (DeepSpeed/FSDP: see eval_before_skipped)
            self.samples = [{"prompt": p, "reference": ref, "before": None} for p, ref in pairs]
        for sample, answer in zip(self.samples, answers):
            sample["after"] = answer

    def _greedy_answers(self, prompts: list[str], max_new_tokens: int, *, deadline: float | None = None) -> list[str]:
        """Greedy answers of the model being trained, batch by batch; no batch starts after
        `deadline` (time.monotonic), so the answers may cover only the first prompts. Under
        lockstep generation the ranks agree on stopping. The model is back in training mode after."""
        data, loaded = self.prepared.data, self.prepared.model.loaded
        model = self._live_model()
        batch_size = max(self.config.eval_batch_size, 8)
        lockstep = self._generation_ranks() == "all"
        answers: list[str] = []
        with self._sharded_forward(model):
            for start in range(0, len(prompts), batch_size):
                late = (deadline is not None and time.monotonic() > deadline) or stopping.requested() is not None
                if distributed.any_rank(late) if lockstep else late:
                    break
                answers += metrics.generate(model, data.tokenizer, prompts[start:start + batch_size],
                                            seq2seq=loaded.seq2seq, max_new_tokens=max_new_tokens,
                                            max_input_length=data.max_len, batch_size=batch_size)
        model.train()
        return answers

    def _check_knowledge(self, stage: str) -> None:
        """The general-knowledge questions (llm/knowledge.py), before and after training."""
        from . import knowledge

        if not self.config.knowledge_check:
            return
        if self._generation_ranks() == "main" and not is_main_process():
            return
        data = self.prepared.data
        prompts = knowledge.prompts(data.tokenizer, data.prompt, data.format)
        if prompts is None:
            return
        answers = self._greedy_answers(prompts, knowledge.MAX_NEW_TOKENS)
        if is_main_process():
            result = knowledge.score(answers)
            self.results.setdefault("general_knowledge", {})[stage] = result
            self._record_score(stage, "general_knowledge", result["score"])
            log.info("general knowledge %s training: %d of %d right", stage, result["right"], result["asked"])

    def _score_tasks(self, stage: str) -> None:
        """The `evaluation` channel's tasks (docs/evaluation.md), before and after training: on rank 0,
        or under ZeRO-3/FSDP on every rank in lockstep (llm/lockstep.py), rank 0 recording."""
        from .lockstep import score_tasks

        ranks = self._generation_ranks()
        if not self.eval_tasks or (ranks == "main" and not is_main_process()):
            return
        if is_main_process():
            self.phases.begin(f"evaluation tasks ({stage} training)")
        view = self._scoring_view()

        def record(task, result) -> None:
            if is_main_process():
                self.results.setdefault("evaluation", {}).setdefault(task.name, {})[stage] = {
                    k: v for k, v in result.items() if k != "details"}
                self._record_score(stage, task.name, result["score"])
                metrics.print_metric(f"{'base' if stage == 'before' else 'final'}_eval_{task.name}", result["score"])

        with self._sharded_forward(view.model):
            left = score_tasks(self.eval_tasks, view, lockstep=ranks == "all", budget_s=EVAL_TIME_BUDGET_S,
                               max_new_tokens=EVAL_MAX_NEW_TOKENS, on_result=record,
                               stop_requested=lambda: stopping.requested() is not None)
        if left:  # said, never silently cut: the gate counts them as unscored
            self.results.setdefault("evaluation_unscored", {})[stage] = left
            log.warning("evaluation tasks %s training: the %g s budget is spent; not scored: %s", stage,
                        EVAL_TIME_BUDGET_S, ", ".join(left))
        view.model.train()

    def _record_score(self, stage: str, name: str, score: float) -> None:
        """A task's headline score at `stage` into the outcome, which the evaluation gate decides from."""
        key = f"scores_{stage}"
        self.outcome = dataclasses.replace(self.outcome, **{key: {**getattr(self.outcome, key), name: score}})

    def _live_model(self):
        """The model being trained, unwrapped (before train() starts: the prepared module)."""
        trainer = self.trainer
        return trainer.accelerator.unwrap_model(trainer.model) if trainer else self.prepared.model.module

    def _scoring_view(self) -> SimpleNamespace:
        """The model being trained, as evaluation/scoring.py reads a loaded model."""
        data, model = self.prepared.data, self._live_model()
        model.eval()
        return SimpleNamespace(model=model, tokenizer=data.tokenizer, seq2seq=self.prepared.model.loaded.seq2seq,
                               max_input_tokens=data.max_len, info=SimpleNamespace(prompt=data.prompt))

    # ------------------------------------------------------------------ save
    def save(self) -> None:
        """Rank 0 writes model/ (through staging) and output/data/."""
        from ..report import write_job_report
        from .saving import save_model

        data, model = self.prepared.data, self.prepared.model
        self.phases.begin("saving")
        staging = self.writer.start() if is_main_process() else None
        adapter_only = save_model(self.trainer, staging, config=self.config, tokenizer=data.tokenizer,
                                  base_path=model.base_path, sharded=self.prepared.engine.sharded,
                                  model_dir=self.paths.model_dir)
        if not is_main_process():
            return
        self.writer.write_metadata({
            "architecture": "seq2seq" if model.loaded.seq2seq else "causal",
            "model_type": model.loaded.model.config.model_type,
            "base_model": model_name(model.base_path), "base_model_path": str(model.base_path) if adapter_only else None,
            "adapter_only": adapter_only, "data_format": data.format,
            "prompt": data.prompt.to_dict(), "max_input_length": data.max_len,
            "hyperparameters": self.config.to_dict(), "metrics": metrics.metric_summary(self.results),
        })
        self.writer.publish()
        self.phases.end()
        self.write_reports()
        write_job_report(self.paths.base)  # never raises: a report error is logged, the model stands

    def write_reports(self) -> None:
        out = self.paths.output_data_dir
        out.mkdir(parents=True, exist_ok=True)
        write_metrics(out / "metrics.json", self.results)  # through its schema (metrics_file.py), key for key
        if self.samples:
            (out / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in self.samples))
        history = getattr(self.trainer, "state", None)
        if history is not None:
            (out / "log_history.json").write_text(json.dumps(history.log_history, indent=2) + "\n")


def load_eval_tasks(channel: Path | None) -> list:
    from ..evaluation.tasks import load_tasks

    return load_tasks(channel) if channel is not None else []


def _prepare_checkpoint_staging(staging: Path) -> None:
    """This node's local rank 0 empties the checkpoint staging folder; the others wait."""
    if distributed.local_rank() == 0:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
