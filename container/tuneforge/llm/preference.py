"""The preference recipe (training_method=dpo|orpo|simpo|kto): the SFT recipe's job around TRL's
trainers (llm/preference_methods.py says which).

Everything a job is stays the Recipe's: reading the channels (preference rows, data/preference.py),
the failure file, SIGTERM and checkpoints (CommitCheckpoints, StopOnSignal, resume), the tasks of
the evaluation channel, saving model/ as an ordinary model folder. What differs is here: the rows
are rendered, not tokenized (TRL tokenizes them); with LoRA the reference model is the base with
the adapter turned off (TRL's peft_config path, no copy); with full fine-tuning TRL keeps a frozen
copy or, with precompute_ref_log_probs, computes the reference log-probabilities once (DPO, KTO;
ORPO and SimPO need no reference).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace

from ..data.registry import FORMATS
from ..errors import DataError
from ..model_folder import ModelMetadata
from ..modeling import resolve_base_model
from ..job import distributed
from . import metrics
from .preference_data import preference_rows
from .preference_methods import method_trainer, reference_kind
from .preference_metrics import (PreferenceMetricLines, PreferenceProgressLines, final_reward_metrics,
                                 preference_accuracy)
from .recipe import DataBundle, EngineBundle, ModelBundle, Recipe, _Source, is_main_process

log = logging.getLogger(__name__)


class PreferenceRecipe(Recipe):
    lora_config = None   # set by _setup_model under LoRA: TRL wraps the base itself (reference = adapter off)
    reward_lines = None  # PreferenceMetricLines, set by _trainer

    # ------------------------------------------------------------------ data
    def _read_data(self) -> _Source:
        """Every rank reads the pairs itself: TRL tokenizes them on each rank (main process first),
        so there is no node-local token cache to hand over as SFT has (rows_handoff.py)."""
        return self._read_rows()

    def _read_rows(self) -> _Source:
        """The rows; a model channel written by an SFT job lends its prompt format (chaining)."""
        source = super()._read_rows()
        if any(e.rendered for e in source.train_examples[:1]):  # the channel's own template.json wins
            return source
        saved = self._saved_prompt(source.prompt)
        return dataclasses.replace(source, prompt=saved) if saved else source

    def _saved_prompt(self, data_prompt):
        metadata = ModelMetadata.read(resolve_base_model(self.paths, self.config))
        if metadata is None or not metadata.prompt:
            return None
        saved = metadata.prompt_format()
        chat = FORMATS[data_prompt.kind].conversational
        rows = FORMATS.get(saved.kind)
        if rows is None or rows.prompt_kind != saved.kind or rows.free_text or chat != rows.conversational:
            log.warning("the base model was fine-tuned on %s data and these pairs are %s: the pairs keep their own "
                        "prompt format", saved.kind, "conversations" if chat else "text")
            return None
        log.info("the base model is a tuneforge fine-tune: its saved %s prompt format renders the pairs", saved.kind)
        return saved

    def _tokenize(self, source: _Source, tokenizer, max_len: int, seq2seq: bool) -> DataBundle:
        cfg = self.config
        if seq2seq:
            raise DataError(f"{cfg.training_method} trains decoder-only (causal) models and the base model is seq2seq",
                            where="the model channel", fix="use a causal model (Llama, Mistral, Qwen, ...)")
        self.phases.begin(f"rendering {source.n_train + len(source.val_examples or [])} preference pairs")
        identity = {"method": cfg.training_method, "beta": cfg.beta, "loss": cfg.dpo_loss_type,
                    "label_smoothing": cfg.label_smoothing, "simpo_gamma": cfg.simpo_gamma,
                    **({"kto_weights": [cfg.kto_desirable_weight, cfg.kto_undesirable_weight]}
                       if cfg.training_method == "kto" else {})}  # kto alone: the other methods' fingerprints are unchanged
        self.results["data_format"] = source.format  # until _report_data puts it under data.format
        train = preference_rows(source.train_examples, tokenizer, source.prompt, identity)
        val = preference_rows(source.val_examples, tokenizer, source.prompt, identity) if source.val_examples else None
        return DataBundle(
            tokenizer=tokenizer, prompt=source.prompt, format=source.prompt.kind, rows_format=source.format, files=source.files,
            validation_source="channel" if source.validation_channel else f"split {cfg.validation_split_ratio}",
            max_len=max_len, val_examples=list(val.features) if val else None, train_tokens=train, val_tokens=val)

    def _preflight(self, data: DataBundle, engine: EngineBundle, model_config) -> None:
        """On GPUs: the SFT estimate for twice the batch (chosen and rejected go through together), plus
        the frozen reference copy that full fine-tuning keeps unless precompute_ref_log_probs."""
        from .preflight import PlanInputs, preflight

        cfg = self.config
        inputs = PlanInputs(config=cfg, dtype=engine.dtype, fsdp_active=engine.fsdp_active)
        need = preflight(inputs, model_config, 2 * data.max_len, engine.ds_config)
        if need is None:
            return
        estimate = need.total / 2**30
        if not cfg.use_lora and not cfg.precompute_ref_log_probs:
            from .preflight import config_dim

            copy = 2 * 12 * config_dim(model_config, "num_hidden_layers", "n_layer", "num_layers") * \
                config_dim(model_config, "hidden_size", "n_embd", "d_model") ** 2 / 2**30
            self.results["reference_copy_gib"] = round(copy, 2)
            estimate += copy
        self.results["memory_estimate_gib"] = round(estimate, 2)

    def _report_data(self, data: DataBundle, channel: Path) -> None:
        train, val = data.train_tokens.report(), data.val_tokens.report() if data.val_tokens else None
        del self.results["data_format"]
        self.results["data"] = {"format": data.rows_format, "prompt_format": data.prompt.kind, "files": data.files,
                                "max_input_length": data.max_len, "validation_source": data.validation_source,
                                "train": train, "validation": val, "prompt": data.prompt.to_dict()}
        log.info("data: %s rows (%s prompts) from %s; train rows=%d validation rows=%s", data.rows_format,
                 data.prompt.kind, channel, train["rows"], val["rows"] if val else 0)

    def _flat_view(self, prepared) -> SimpleNamespace:
        """As for SFT, without token rows: the report's rendered example reads SFT tokens, which a
        preference job does not have (its fingerprint still identifies the data for resume)."""
        view = super()._flat_view(prepared)
        view.train_tokens = SimpleNamespace(features=[], fingerprint=prepared.data.train_tokens.fingerprint)
        return view

    # ------------------------------------------------------------------ model and trainer
    def _setup_model(self, base_path: Path, loaded, engine: EngineBundle) -> ModelBundle:
        """As for SFT (LoRA targets checked, parameters counted); under LoRA the adapter is taken off
        again and its config handed to TRL, which wraps the base so the reference is the base itself."""
        bundle = super()._setup_model(base_path, loaded, engine)
        if not self.config.use_lora:
            return bundle
        self.lora_config = bundle.module.peft_config["default"]
        return dataclasses.replace(bundle, module=bundle.module.unload())

    def _plan_run(self, prepared):
        """The engine's choices and the checkpoint writer; for DPO also the batching: pairs of similar
        length share a batch (llm/batching.py) where random batches would be >= 15 % padding, as
        for SFT. TRL computes the loss itself; KTO pairs rows with their batch neighbours, and ORPO
        and SimPO batch as TRL does."""
        from .batching import describe
        from .preference_data import pair_token_ids

        cfg, plan = self.config, self._engine_plan(prepared.engine)
        if cfg.training_method != "dpo":
            return plan
        batching = describe(pair_token_ids(prepared.data.train_tokens.features, prepared.data.tokenizer),
                            cfg.group_by_length, cfg.per_device_train_batch_size, distributed.world_size(),
                            prepared.engine.args.data_seed)
        return dataclasses.replace(plan, batching=batching)

    def _plan_liger(self, model_config, seq2seq: bool) -> dict:
        """Off: TRL's preference trainers would swap in Liger's own preference losses."""
        return {"setting": self.config.liger_kernel, "enabled": False, "why": "not used by the preference recipes"}

    def _trainer(self, prepared):
        from transformers import EarlyStoppingCallback

        from .callbacks import CommitCheckpoints, FailOnNonFinite, StopOnSignal, TrackerLogs
        from .throughput import TokensSeen
        from .trainer import TrainerPlan, tuneforge_trainer_class

        cfg, data, engine = self.config, prepared.data, prepared.engine
        trainer_class, args = method_trainer(cfg, engine.args, data.max_len)
        kept = SimpleNamespace(stop=StopOnSignal(), tokens_seen=TokensSeen(), commit=CommitCheckpoints(
            engine.checkpoint_staging, self.paths.checkpoint_dir, cfg.save_total_limit, writer=self._checkpoint_writer()))
        self.reward_lines = PreferenceMetricLines()
        callbacks = [PreferenceProgressLines(), self.reward_lines, FailOnNonFinite(cfg.learning_rate), kept.stop, kept.commit,
                     kept.tokens_seen, TrackerLogs(self.trackers)]
        if args.load_best_model_at_end and cfg.early_stopping_patience > 0:
            callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold))
        self.results["preference"] = {"method": cfg.training_method, "beta": cfg.beta, "reference": reference_kind(cfg),
                                      **({"loss_type": cfg.dpo_loss_type, "label_smoothing": cfg.label_smoothing}
                                         if cfg.training_method == "dpo" else {}),
                                      **({"simpo_gamma": cfg.simpo_gamma} if cfg.training_method == "simpo" else {})}
        if prepared.plan.batching:
            self.results["batching"] = prepared.plan.batching
        trainer = tuneforge_trainer_class(trainer_class)(
            model=prepared.model.module, args=args, train_dataset=data.train_tokens.features,
            eval_dataset=data.val_tokens.features if data.val_tokens else None, processing_class=data.tokenizer,
            callbacks=callbacks, peft_config=self.lora_config,
            plan=TrainerPlan(checkpoint_commit=kept.commit, length_grouping=prepared.plan.length_grouping))
        return trainer, kept

    # ------------------------------------------------------------------ evaluation
    def _baseline_evaluation(self, engine: EngineBundle) -> None:
        if self.trainer.eval_dataset is None:
            return
        self.phases.begin("baseline evaluation")
        self._record_preference_accuracy("before")
        self._generate_samples("before")
        self._check_knowledge("before")

    def _record_preference_accuracy(self, stage: str) -> None:
        """log p(chosen) > log p(rejected) under the policy, on the validation pairs: rank 0 alone on
        whole weights, every rank in lockstep on ZeRO-3/FSDP shards (llm/lockstep.py)."""
        data = self.prepared.data
        if not data.val_examples or "chosen" not in data.val_examples[0]:  # unpaired (KTO) rows: no pairs
            return
        if self._generation_ranks() == "main" and not is_main_process():
            return
        model = self._live_model()
        with self._sharded_forward(model):
            result = preference_accuracy(model, data.tokenizer, data.val_examples, data.max_len)
        if not is_main_process():
            return
        self.results.setdefault("preference_accuracy", {})[stage] = result
        log.info("preference accuracy %s training (log p(chosen) > log p(rejected)): %s on %d validation pairs",
                 stage, result["accuracy"], result["pairs"])

    def _generate_samples(self, stage: str) -> None:
        """Greedy answers to the validation prompts before and after, the chosen answer as reference
        (every rank in lockstep where the weights are sharded)."""
        data = self.prepared.data
        if self.config.rouge_samples == 0 or not data.val_examples:
            return
        if self._generation_ranks() == "main" and not is_main_process():
            return
        eos = data.tokenizer.eos_token or ""  # a chat answer is rendered up to the template's end marker
        references = [(r["prompt"], _answer_text(r.get("chosen", r.get("completion")), eos)) for r in data.val_examples
                      if r.get("label", True)]  # unpaired rows: the desirable answers are the references
        pairs = references[:self.config.rouge_samples]
        answers = self._greedy_answers([p for p, _ in pairs], self.config.max_output_length)
        if is_main_process():
            self._record_samples(stage, pairs[:len(answers)], answers)

    def _after_final_loss(self) -> None:  # no perplexity: exp of a preference loss is none
        self._record_preference_accuracy("after")

    def evaluate(self) -> dict:
        self._final_evaluation()
        self._score_tasks("after")
        finals = final_reward_metrics(self.reward_lines.last if self.reward_lines else {})
        self.results.update({f"final_{k}": v for k, v in finals.items()})
        if is_main_process():
            metrics.print_final_lines(self.results, ("train_loss", "eval_loss", *(f"final_{k}" for k in finals),
                                                     *metrics.SCORE_KEYS))
        return self.results


def _answer_text(rendered: str, eos: str) -> str:
    """The answer a greedy generation is compared with: the rendered text without the end-of-sequence
    marker the chat template closes it with (generation stops at it and never shows it)."""
    text = rendered.rstrip()
    return text[:-len(eos)].rstrip() if eos and text.endswith(eos) else rendered
