"""Which TRL trainer and config each preference method runs on (trl 1.16).

- dpo:   trl.DPOTrainer (reference: base with the adapter off, a frozen copy, or precomputed log-probs)
- kto:   trl.KTOTrainer, unpaired rows (reference as for DPO)
- orpo:  trl.experimental.orpo.ORPOTrainer, reference-free; beta is ORPO's lambda
- simpo: trl.experimental.cpo.CPOTrainer with loss_type=simpo and cpo_alpha=0, reference-free;
         beta is SimPO's reward scale, simpo_gamma its target margin
Each config holds every TrainingArguments value of the Recipe's arguments.
"""

from __future__ import annotations

import dataclasses

REFERENCE_FREE = ("orpo", "simpo")


def _training_values(args) -> dict:
    from transformers import TrainingArguments

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments)
              if f.init and hasattr(args, f.name)}
    values.update(train_sampling_strategy="random", remove_unused_columns=True)  # TRL picks its columns itself
    return values


def method_trainer(config, args, max_len: int):
    """(trainer class, its config) for config.training_method."""
    values, method = _training_values(args), config.training_method
    precompute = config.precompute_ref_log_probs and not config.use_lora
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer, DPOConfig(**values, beta=config.beta, loss_type=[config.dpo_loss_type],
                                     label_smoothing=config.label_smoothing, max_length=max_len,
                                     precompute_ref_log_probs=precompute, padding_free=False, dataset_num_proc=None)
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        values["train_sampling_strategy"] = "sequential"  # KTO pairs each row with its batch neighbours for the KL term
        return KTOTrainer, KTOConfig(**values, beta=config.beta, max_length=max_len, precompute_ref_log_probs=precompute,
                                     desirable_weight=config.kto_desirable_weight,
                                     undesirable_weight=config.kto_undesirable_weight)
    if method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer, ORPOConfig(**values, beta=config.beta, max_length=max_len)
    if method == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOTrainer, CPOConfig(**values, beta=config.beta, loss_type="simpo", cpo_alpha=0.0,
                                     simpo_gamma=config.simpo_gamma, max_length=max_len)
    raise ValueError(f"no preference trainer for training_method={method}")


def reference_kind(config) -> str:
    if config.training_method in REFERENCE_FREE:
        return f"none: {config.training_method} is reference-free"
    if config.use_lora:
        return "the base model with the LoRA adapter turned off (no copy)"
    if config.precompute_ref_log_probs:
        return "log-probabilities of the base computed once before training (no copy)"
    return "a frozen copy of the base model"
