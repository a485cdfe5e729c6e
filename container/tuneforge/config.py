"""Every training hyperparameter: type, default, range, meaning and aliases, declared once.

JumpStart names are canonical; Autopilot, Flan-T5 and Trainer names are aliases (Autopilot's with
its own, narrower ranges). Reading SageMaker's string encodings, alias ranges and the error messages
live in tuneforge.hyperparameters; this file holds the declarations and the combinations no single
field can check. docs/hyperparameters.md is generated from it (`tuneforge hyperparameters --markdown`).
"""

from __future__ import annotations

from typing import Any, Literal

from .data.registry import FORMAT_NAMES, FORMATS
from .hyperparameters import (FALSE_WORDS, IGNORED_KEYS, TRUE_WORDS, Bits, FieldSpec, Flag, Float, Int, ModuleList,
                              OptionalInt, Rule, SageMakerHyperparameters, Text, TriState, hp, markdown_cell,
                              parse_flag, parse_thresholds, zero_refused)

__all__ = ["ALIASES", "FALSE_WORDS", "FIELDS", "IGNORED_KEYS", "TRUE_WORDS", "FieldSpec", "Flag", "Float", "Int",
           "OptionalInt", "Text", "TrainConfig", "markdown_table", "parse_flag", "parse_hyperparameters"]


class TrainConfig(SageMakerHyperparameters):
    # --- data ---
    instruction_tuned: Flag = hp(False, "Train on prompt/completion rows from *.jsonl files (+ template.json).")
    chat_dataset: Flag = hp(False, "Train on conversations (`dialog`, `messages` or `conversations`); loss on assistant turns.")
    data_format: Literal[("auto", *FORMAT_NAMES)] = hp("auto", "Force the data format instead of detecting it.")
    add_input_output_demarcation_key: Flag = hp(True, "Insert '\\n\\n### Response:\\n' between prompt and completion.")
    max_input_length: Int = hp(-1, "Longest tokenized example; -1 = min(1024, the tokenizer's limit). Longer rows are truncated and counted.", ge=-1)
    max_output_length: Int = hp(128, "Longest target for seq2seq models; also the most tokens generated per ROUGE sample.", ge=1)
    validation_split_ratio: Float = hp(0.2, "Share of train rows held out when there is no validation channel.", ge=0.0, le=0.9)
    train_data_split_seed: Int = hp(0, "Seed of the train/validation split.", ge=0)
    max_train_samples: Int = hp(-1, "Use at most this many training rows; -1 = all (0 is refused).", ge=-1)
    max_val_samples: Int = hp(-1, "Use at most this many validation rows; -1 = all.", ge=-1)
    preprocessing_num_workers: OptionalInt = hp(None, "Processes for tokenization; None = one.", ge=1)
    rouge_samples: Int = hp(32, "Validation rows generated for ROUGE (0 turns ROUGE off).", ge=0)
    eval_min_score: Text = hp("", "Gate on the `evaluation` channel's tasks (docs/evaluation.md): task=score pairs, e.g. tickets=0.9,general_knowledge=0.5; a task below its score fails the job (exit 1) after model/ is saved.")
    eval_max_regression: Float = hp(-1.0, "Gate: points any evaluation task (and general_knowledge) may lose from the base to the fine-tune, e.g. 0.02; -1 = no limit. A bigger loss fails the job (exit 1) after model/ is saved.", ge=-1.0, le=1.0)
    knowledge_check: Flag = hp(True, "Ask 12 bundled general questions before and after training and report the share answered right (metrics.json general_knowledge): a drop means the fine-tune made the model forget.")
    # --- training method (docs/preference.md) ---
    training_method: Literal["sft", "dpo", "orpo", "simpo", "kto"] = hp("sft", "sft = supervised fine-tuning on prompts and answers; on TRL's trainers (docs/preference.md): dpo = Direct Preference Optimization, orpo = odds-ratio preference optimization (no reference model), simpo = SimPO (no reference model), all three on preference pairs ({prompt, chosen, rejected} or chosen/rejected conversations); kto = KTO on unpaired {prompt, completion, label} rows.")
    beta: Float = hp(0.1, "dpo/kto: how far the model may move from the reference (the base before this job), higher = closer to it; orpo: lambda, the weight of the odds-ratio term; simpo: the reward scale (the paper uses 2-2.5).", gt=0.0, le=100.0)
    simpo_gamma: Float = hp(0.5, "simpo: the target reward margin (TRL's simpo_gamma).", ge=0.0, le=100.0)
    dpo_loss_type: Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
                           "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"] = hp(
        "sigmoid", "DPO loss, as TRL's DPOConfig.loss_type names it: sigmoid = the DPO paper's, ipo, hinge, robust (with label_smoothing), ...", aliases={"loss_type": None})
    label_smoothing: Float = hp(0.0, "DPO: the share of preference labels assumed flipped (robust and sigmoid losses; TRL's label_smoothing), below 0.5.", ge=0.0, le=0.49)
    kto_desirable_weight: Float = hp(1.0, "kto: the weight of the desirable rows' loss (TRL's desirable_weight); raise it where desirable rows are fewer, so that desirable_weight x their count is about undesirable_weight x theirs (the KTO paper keeps that ratio within 1 to 4/3).", gt=0.0, le=100.0)
    kto_undesirable_weight: Float = hp(1.0, "kto: the weight of the undesirable rows' loss (TRL's undesirable_weight).", gt=0.0, le=100.0)
    precompute_ref_log_probs: Flag = hp(False, "dpo/kto with full fine-tuning (peft_type=none): compute the reference log-probabilities once before training instead of keeping a frozen copy of the model in memory. With LoRA the reference is the base with the adapter turned off and no copy is kept either way.")
    # --- schedule ---
    epoch: Int = hp(5, "Passes over the training data.", ge=1, le=1000,
                    aliases={"epochCount": (1, 10), "epochs": None, "num_train_epochs": None})
    max_steps: Int = hp(-1, "Stop after this many optimizer steps; -1 = run all epochs (0 is refused).", ge=-1)
    learning_rate: Float = hp(1e-4, "Peak learning rate.", gt=0.0, le=1.0, aliases={"learningRate": (0.0, 1.0)})
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                               "polynomial", "inverse_sqrt"] = hp("linear", "Learning-rate schedule.")
    warmup_ratio: Float = hp(0.0, "Share of steps spent warming up.", ge=0.0, le=1.0)
    warmup_steps: Int = hp(0, "Warm-up steps (wins over warmup_ratio when > 0).", ge=0,
                           aliases={"learningRateWarmupSteps": (0, 250)})
    per_device_train_batch_size: Int = hp(4, "Training rows per device per step.", ge=1, le=1024,
                                          aliases={"batchSize": (1, 64), "batch_size": None})
    per_device_eval_batch_size: Int = hp(-1, "Validation rows per device per step; -1 = per_device_train_batch_size (evaluation needs less memory than training, so it never needs fewer).", ge=-1, le=1024)
    gradient_accumulation_steps: Int = hp(1, "Micro-batches per optimizer step.", ge=1, le=1024)
    weight_decay: Float = hp(0.0, "AdamW weight decay.", ge=0.0, le=1.0)
    adam_beta1: Float = hp(0.9, "AdamW beta1.", ge=0.0, le=1.0)
    adam_beta2: Float = hp(0.999, "AdamW beta2.", ge=0.0, le=1.0)
    adam_epsilon: Float = hp(1e-8, "AdamW epsilon.", gt=0.0, le=1.0)
    max_grad_norm: Float = hp(1.0, "Gradient clipping norm (0 = off).", ge=0.0)
    label_smoothing_factor: Float = hp(0.0, "Label smoothing.", ge=0.0, le=1.0)
    seed: Int = hp(10, "Random seed for initialization, dropout and data order.", ge=0)
    logging_steps: Int = hp(10, "Log the training loss every this many steps.", ge=1)
    tensorboard: Flag = hp(False, "Write the training scalars (loss, learning rate, gradient norm, evaluation loss and perplexity, tokens/s, final metrics) as TensorBoard event files to /opt/ml/output/tensorboard (docs/trackers.md). They are written whenever that folder exists (SageMaker's TensorBoardOutputConfig creates it), even with False.")
    evaluation_strategy: Literal["epoch", "steps", "no"] = hp("epoch", "When to evaluate: every epoch, every eval_steps, or never.",
                                                              aliases={"eval_strategy": None})
    eval_steps: Int = hp(20, "Steps between evaluations when evaluation_strategy=steps.", ge=1)
    load_best_model_at_end: Flag = hp(True, "Keep the weights with the lowest validation loss.")
    early_stopping_patience: Int = hp(3, "Stop after this many evaluations without improvement; 0 = off.", ge=0)
    early_stopping_threshold: Float = hp(0.0, "Smallest validation-loss drop that counts as improvement.", ge=0.0)
    dataloader_num_workers: Int = hp(0, "DataLoader worker processes.", ge=0)
    group_by_length: Flag = hp(True, "Batch rows (and DPO pairs) of similar length together where random batches would be >= 15 % padding (shuffled mega-batches sorted by length, batches in random order, every row once per epoch): far less padding, same per-token loss. False = plain random batches.")
    packing: TriState = hp("auto", "Pack rows into padding-free bins (position_ids restart per row; attention never crosses a row): auto = where the attention kernel makes it faster (FlashAttention varlen on GPUs), true = always, false = never. metrics.json records the choice.")
    liger_kernel: TriState = hp("auto", "Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) on CUDA: auto = when installed and the family is supported, true = required, false = off.")
    # --- model ---
    model_id: Text = hp("", "Local folder with the base model, used when there is no `model` channel.")
    train_from_scratch: Flag = hp(False, "Initialize weights randomly from the base model's config.")
    trust_remote_code: Flag = hp(False, "Allow model code shipped with the weights to run (off: safer).")
    chat_template: Text = hp("", "Jinja chat template to use instead of the tokenizer's.")
    gradient_checkpointing: Flag = hp(False, "Recompute activations in backward to save memory.")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"] = hp("auto", "Attention kernel: auto = flash_attention_2 on CUDA when the flash_attn package is installed, else sdpa; flash_attention_* need an NVIDIA GPU and their package (flash_attention_3: flash_attn_interface, Hopper); eager is the slow reference. With FlashAttention, packing=auto packs rows padding-free.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = hp("auto", "Training precision: auto = bf16 on GPUs that have it, else fp16 on GPUs, fp32 on CPU.")
    bf16: Flag = hp(False, "Shortcut for precision=bf16 (JumpStart name).")
    fp16: Flag = hp(False, "Shortcut for precision=fp16 (JumpStart name).")
    # --- PEFT ---
    peft_type: Literal["lora", "none"] = hp("lora", "Adapter method; none = full fine-tuning.")
    lora_r: Int = hp(8, "LoRA rank.", ge=1, le=1024)
    lora_alpha: Int = hp(32, "LoRA scaling numerator.", ge=1, le=4096)
    lora_dropout: Float = hp(0.05, "Dropout on the LoRA input.", ge=0.0, le=1.0)
    target_modules: ModuleList = hp("", "Comma list of module names, or all-linear; empty = the family's default (Llama: q_proj,v_proj).")
    merge_weights: Flag = hp(True, "Merge the adapter into the base and save full weights; False saves the adapter only.")
    # --- quantization and scale ---
    int8_quantization: Flag = hp(False, "Load the base in 8 bits (bitsandbytes, GPU only).")
    load_in_4bit: Flag = hp(False, "QLoRA: load the base in 4 bits (GPU only).")
    bits: Bits = hp(16, "JumpStart name: 4 = QLoRA, 8 = int8, 16 = no quantization.")
    quant_type: Literal["nf4", "fp4"] = hp("nf4", "4-bit quantization type.")
    double_quant: Flag = hp(True, "Quantize the 4-bit quantization constants too.")
    enable_fsdp: Flag = hp(False, "Shard the model with FSDP across GPUs (JumpStart default True on multi-GPU Llama; GPU only).")
    deepspeed: Text = hp("none", "DeepSpeed ZeRO preset (zero2, zero3, zero2_offload, zero3_offload), a JSON file name in the `config` channel, or none.")
    checkpoint_steps: Int = hp(0, "Save a resumable checkpoint to /opt/ml/checkpoints every this many steps; 0 = each epoch.", ge=0,
                               aliases={"save_steps": None})
    save_total_limit: Int = hp(2, "Checkpoints to keep in /opt/ml/checkpoints.", ge=1)
    async_checkpoint: Flag = hp(True, "Full fine-tuning on one host without DeepSpeed/FSDP: copy the weights and optimizer state in memory at a checkpoint and write them in the background while training goes on; false = training waits for the write.")

    # Combinations no field can check alone; the message may name fields.
    COMBINATION_RULES = (
        Rule(lambda c: parse_thresholds(c.eval_min_score) is None, "eval_min_score is not task=score pairs",
             "hyperparameter eval_min_score", "write e.g. tickets=0.9,general_knowledge=0.5"),
        Rule(lambda c: c.instruction_tuned and c.chat_dataset, "instruction_tuned and chat_dataset are both true",
             "hyperparameters instruction_tuned/chat_dataset", "set at most one of them to True"),
        Rule(lambda c: c.bf16 and c.fp16, "bf16 and fp16 are both true", "hyperparameters bf16/fp16",
             "set at most one of them"),
        Rule(lambda c: c.quantization != "none" and not c.use_lora, "quantized base weights can only be trained with LoRA",
             "hyperparameter peft_type", "set peft_type=lora or turn quantization off"),
        Rule(lambda c: c.quantization != "none" and c.enable_fsdp,
             "int8/4-bit quantization is not supported together with FSDP",
             "hyperparameters enable_fsdp/int8_quantization", "set exactly one of them to True"),
        Rule(lambda c: c.enable_fsdp and c.deepspeed != "none", "FSDP and DeepSpeed were both asked for",
             "hyperparameters enable_fsdp/deepspeed", "choose one"),
        Rule(lambda c: c.training_method == "sft" and c.data_format != "auto" and "sft" not in FORMATS[c.data_format].methods,
             "data_format={data_format} needs a preference method", "hyperparameters training_method/data_format",
             "set training_method=dpo, orpo or simpo for preference pairs, kto for unpaired rows"),
        Rule(lambda c: c.training_method == "dpo" and c.dpo_loss_type == "exo_pair" and c.label_smoothing == 0,
             "dpo_loss_type=exo_pair needs label_smoothing > 0", "hyperparameters dpo_loss_type/label_smoothing",
             "set label_smoothing=0.001 (the EXO paper's value)"),
        zero_refused("per_device_eval_batch_size", "the training batch size"),
        zero_refused("max_train_samples", "all rows"),  # 0 rows: the sampler fails with a bare ValueError
        zero_refused("max_steps", "all epochs"),  # 0 steps: the base weights would be saved as the result
        Rule(lambda c: c.max_input_length != -1 and c.max_input_length < 8, "{max_input_length} is too short",
             "hyperparameter max_input_length", "use -1 (automatic) or a value >= 8"),
    )

    @property
    def effective_precision(self) -> str:
        """precision, with the JumpStart shortcuts bf16=True / fp16=True applied."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else self.precision

    @property
    def quantization(self) -> str:
        """none | int8 | nf4/fp4, from int8_quantization, load_in_4bit or bits."""
        if self.load_in_4bit or self.bits == 4:
            return self.quant_type
        if self.int8_quantization or self.bits == 8:
            return "int8"
        return "none"

    @property
    def use_lora(self) -> bool:
        return self.peft_type == "lora"

    @property
    def eval_batch_size(self) -> int:
        """per_device_eval_batch_size, with -1 resolved to the training batch size."""
        value = self.per_device_eval_batch_size
        return self.per_device_train_batch_size if value == -1 else value


COMBINATION_RULES = TrainConfig.COMBINATION_RULES
FIELDS: dict[str, FieldSpec] = TrainConfig.fields()
# alias -> (canonical name, (lo, hi) range the alias imposes, or None)
ALIASES: dict[str, tuple[str, tuple | None]] = TrainConfig.aliases()


def parse_hyperparameters(raw: dict[str, Any]) -> TrainConfig:
    """Turn SageMaker's string map into a validated TrainConfig; the first problem (in the order
    the keys were given) as a HyperparameterError."""
    return TrainConfig.parse(raw)


def markdown_table() -> str:
    """The hyperparameter reference written to docs/hyperparameters.md."""
    lines = TrainConfig.markdown_rows()
    lines += ["", "Aliases (Autopilot, Flan-T5 and Trainer names):", "",
              "| alias | means | range the alias imposes |", "|---|---|---|"]
    for alias, (name, span) in ALIASES.items():
        lines.append(f"| `{alias}` | `{name}` | {markdown_cell('' if span is None else f'{span[0]}-{span[1]}')} |")
    return "\n".join(lines) + "\n"
