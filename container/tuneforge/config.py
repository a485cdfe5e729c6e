"""Every training hyperparameter: type, default, range and meaning, in one typed schema.

SageMaker hands hyperparameters over as strings in several encodings ("True", "true",
"\"True\"", "5", "\"5\""); `parse_hyperparameters` accepts them all. JumpStart names are
canonical; Autopilot and Flan-T5 names are aliases (Autopilot's with its own, narrower ranges).
docs/hyperparameters.md is generated from this file (`tuneforge hyperparameters --markdown`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import HyperparameterError


def hp(default, doc: str, *, lo=None, hi=None, choices=None, lo_open=False):
    return field(default=default, metadata={"doc": doc, "lo": lo, "hi": hi, "choices": choices,
                                            "lo_open": lo_open})


@dataclass
class TrainConfig:
    # --- data ---
    instruction_tuned: bool = hp(False, "Train on prompt/completion rows from *.jsonl files (+ template.json).")
    chat_dataset: bool = hp(False, "Train on conversations (`dialog`, `messages` or `conversations`); loss on assistant turns.")
    data_format: str = hp("auto", "Force the data format instead of detecting it.",
                          choices=("auto", "instruction", "chat", "domain", "table"))
    add_input_output_demarcation_key: bool = hp(True, "Insert '\\n\\n### Response:\\n' between prompt and completion.")
    max_input_length: int = hp(-1, "Longest tokenized example; -1 = min(1024, the tokenizer's limit). Longer rows are truncated and counted.", lo=-1)
    max_output_length: int = hp(128, "Longest target for seq2seq models; also the most tokens generated per ROUGE sample.", lo=1)
    validation_split_ratio: float = hp(0.2, "Share of train rows held out when there is no validation channel.", lo=0.0, hi=0.9)
    train_data_split_seed: int = hp(0, "Seed of the train/validation split.", lo=0)
    max_train_samples: int = hp(-1, "Use at most this many training rows; -1 = all.", lo=-1)
    max_val_samples: int = hp(-1, "Use at most this many validation rows; -1 = all.", lo=-1)
    preprocessing_num_workers: int | None = hp(None, "Processes for tokenization; None = one.", lo=1)
    rouge_samples: int = hp(32, "Validation rows generated for ROUGE (0 turns ROUGE off).", lo=0)
    knowledge_check: bool = hp(True, "Ask 12 bundled general questions before and after training and report the share answered right (metrics.json general_knowledge): a drop means the fine-tune made the model forget.")
    # --- schedule ---
    epoch: int = hp(5, "Passes over the training data.", lo=1, hi=1000)
    max_steps: int = hp(-1, "Stop after this many optimizer steps; -1 = run all epochs.", lo=-1)
    learning_rate: float = hp(1e-4, "Peak learning rate.", lo=0.0, hi=1.0, lo_open=True)
    lr_scheduler_type: str = hp("linear", "Learning-rate schedule.",
                                choices=("linear", "cosine", "constant", "constant_with_warmup",
                                         "cosine_with_restarts", "polynomial", "inverse_sqrt"))
    warmup_ratio: float = hp(0.0, "Share of steps spent warming up.", lo=0.0, hi=1.0)
    warmup_steps: int = hp(0, "Warm-up steps (wins over warmup_ratio when > 0).", lo=0)
    per_device_train_batch_size: int = hp(4, "Training rows per device per step.", lo=1, hi=1024)
    per_device_eval_batch_size: int = hp(-1, "Validation rows per device per step; -1 = per_device_train_batch_size (evaluation needs less memory than training, so it never needs fewer).", lo=-1, hi=1024)
    gradient_accumulation_steps: int = hp(1, "Micro-batches per optimizer step.", lo=1, hi=1024)
    weight_decay: float = hp(0.0, "AdamW weight decay.", lo=0.0, hi=1.0)
    adam_beta1: float = hp(0.9, "AdamW beta1.", lo=0.0, hi=1.0)
    adam_beta2: float = hp(0.999, "AdamW beta2.", lo=0.0, hi=1.0)
    adam_epsilon: float = hp(1e-8, "AdamW epsilon.", lo=0.0, hi=1.0, lo_open=True)
    max_grad_norm: float = hp(1.0, "Gradient clipping norm (0 = off).", lo=0.0)
    label_smoothing_factor: float = hp(0.0, "Label smoothing.", lo=0.0, hi=1.0)
    seed: int = hp(10, "Random seed for initialization, dropout and data order.", lo=0)
    logging_steps: int = hp(10, "Log the training loss every this many steps.", lo=1)
    evaluation_strategy: str = hp("epoch", "When to evaluate: every epoch, every eval_steps, or never.",
                                  choices=("epoch", "steps", "no"))
    eval_steps: int = hp(20, "Steps between evaluations when evaluation_strategy=steps.", lo=1)
    load_best_model_at_end: bool = hp(True, "Keep the weights with the lowest validation loss.")
    early_stopping_patience: int = hp(3, "Stop after this many evaluations without improvement; 0 = off.", lo=0)
    early_stopping_threshold: float = hp(0.0, "Smallest validation-loss drop that counts as improvement.", lo=0.0)
    dataloader_num_workers: int = hp(0, "DataLoader worker processes.", lo=0)
    group_by_length: bool = hp(True, "Batch rows of similar length together where random batches would be >= 15 % padding (shuffled mega-batches sorted by length, batches in random order, every row once per epoch): far less padding, same per-token loss. False = plain random batches.")
    packing: str = hp("auto", "Pack rows into padding-free bins (position_ids restart per row; attention never crosses a row): auto = where the attention kernel makes it faster (FlashAttention varlen on GPUs), true = always, false = never. metrics.json records the choice.",
                      choices=("auto", "true", "false"))
    liger_kernel: str = hp("auto", "Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) on CUDA: auto = when installed and the family is supported, true = required, false = off.",
                           choices=("auto", "true", "false"))
    # --- model ---
    model_id: str = hp("", "Local folder with the base model, used when there is no `model` channel.")
    train_from_scratch: bool = hp(False, "Initialize weights randomly from the base model's config.")
    trust_remote_code: bool = hp(False, "Allow model code shipped with the weights to run (off: safer).")
    chat_template: str = hp("", "Jinja chat template to use instead of the tokenizer's.")
    gradient_checkpointing: bool = hp(False, "Recompute activations in backward to save memory.")
    precision: str = hp("auto", "Training precision: auto = bf16 on GPUs that have it, else fp16 on GPUs, fp32 on CPU.",
                        choices=("auto", "fp32", "bf16", "fp16"))
    bf16: bool = hp(False, "Shortcut for precision=bf16 (JumpStart name).")
    fp16: bool = hp(False, "Shortcut for precision=fp16 (JumpStart name).")
    # --- PEFT ---
    peft_type: str = hp("lora", "Adapter method; none = full fine-tuning.", choices=("lora", "none"))
    lora_r: int = hp(8, "LoRA rank.", lo=1, hi=1024)
    lora_alpha: int = hp(32, "LoRA scaling numerator.", lo=1, hi=4096)
    lora_dropout: float = hp(0.05, "Dropout on the LoRA input.", lo=0.0, hi=1.0)
    target_modules: str = hp("", "Comma list of module names, or all-linear; empty = the family's default (Llama: q_proj,v_proj).")
    merge_weights: bool = hp(True, "Merge the adapter into the base and save full weights; False saves the adapter only.")
    # --- quantization and scale ---
    int8_quantization: bool = hp(False, "Load the base in 8 bits (bitsandbytes, GPU only).")
    load_in_4bit: bool = hp(False, "QLoRA: load the base in 4 bits (GPU only).")
    bits: int = hp(16, "JumpStart name: 4 = QLoRA, 8 = int8, 16 = no quantization.", choices=(4, 8, 16))
    quant_type: str = hp("nf4", "4-bit quantization type.", choices=("nf4", "fp4"))
    double_quant: bool = hp(True, "Quantize the 4-bit quantization constants too.")
    enable_fsdp: bool = hp(False, "Shard the model with FSDP across GPUs (JumpStart default True on multi-GPU Llama; GPU only).")
    deepspeed: str = hp("none", "DeepSpeed ZeRO preset (zero2, zero3, zero2_offload, zero3_offload), a JSON file name in the `config` channel, or none.")
    checkpoint_steps: int = hp(0, "Save a resumable checkpoint to /opt/ml/checkpoints every this many steps; 0 = each epoch.", lo=0)
    save_total_limit: int = hp(2, "Checkpoints to keep in /opt/ml/checkpoints.", lo=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

# alias -> (canonical name, (lo, hi) range the alias imposes, or None)
ALIASES: dict[str, tuple[str, tuple | None]] = {
    "epochCount": ("epoch", (1, 10)),
    "batchSize": ("per_device_train_batch_size", (1, 64)),
    "learningRate": ("learning_rate", (0.0, 1.0)),
    "learningRateWarmupSteps": ("warmup_steps", (0, 250)),
    "epochs": ("epoch", None),
    "batch_size": ("per_device_train_batch_size", None),
    "num_train_epochs": ("epoch", None),
    "save_steps": ("checkpoint_steps", None),
    "eval_strategy": ("evaluation_strategy", None),
}

# Keys SageMaker and its SDKs add that are not ours to interpret.
IGNORED_KEYS = {"_tuning_objective_metric", "accept_eula"}


def _unwrap(value: Any) -> Any:
    """Peel JSON string quoting: '"\\"5\\""' -> '5'. Non-JSON strings come back unchanged."""
    for _ in range(3):
        if not isinstance(value, str):
            return value
        text = value.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            try:
                value = json.loads(text)
                continue
            except json.JSONDecodeError:
                return text
        return text
    return value


_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def _coerce(name: str, value: Any, kind: str) -> Any:
    """`kind` is the field's annotation as text ("bool", "int", "float", "str", "int | None")."""
    value = _unwrap(value)
    base = kind.replace(" | None", "")
    if kind.endswith("| None") and (value is None or str(value).strip().lower() in ("none", "null", "")):
        return None
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if base == "int":
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):  # NaN slips through every range comparison
                raise ValueError
            return number
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        text = str(value)
        if name == "target_modules" and text.startswith("["):
            try:
                return ",".join(json.loads(text.replace("'", '"')))
            except json.JSONDecodeError:
                pass
        return text
    except (TypeError, ValueError):
        expected = {"bool": "true or false", "float": "a finite number"}.get(base, f"a{'n' if base == 'int' else ''} {base}")
        raise HyperparameterError(f"{value!r} is not {expected}", where=f"hyperparameter {name}",
                                  fix=f"set {name} to {expected}") from None


def _check_range(name: str, value: Any, lo, hi, choices, lo_open=False, via: str | None = None) -> None:
    label = f"hyperparameter {via or name}"
    if value is None:
        return
    if choices is not None and value not in choices:
        raise HyperparameterError(f"{value!r} is not allowed", where=label,
                                  fix=f"use one of {', '.join(map(str, choices))}")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    if too_low or (hi is not None and value > hi):
        low = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
        high = "" if hi is None else f"<= {hi}"
        span = " and ".join(p for p in (low, high) if p)
        raise HyperparameterError(f"{value!r} is out of range", where=label, fix=f"use a value {span}")


def parse_hyperparameters(raw: dict[str, Any]) -> TrainConfig:
    """Turn SageMaker's string map into a validated TrainConfig."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, raw_value in raw.items():
        if key.startswith("sagemaker_") or key in IGNORED_KEYS:
            continue
        alias_range = None
        name = key
        if key in ALIASES:
            name, alias_range = ALIASES[key]
        elif key not in FIELDS:
            close = difflib.get_close_matches(key, list(FIELDS) + list(ALIASES), n=1, cutoff=0.6)
            fix = f"did you mean {close[0]!r}?" if close else "see docs/hyperparameters.md for the valid names"
            raise HyperparameterError("unknown hyperparameter", where=f"hyperparameter {key}", fix=fix)
        spec = FIELDS[name]
        value = _coerce(key, raw_value, spec.type)
        meta = spec.metadata
        if alias_range:
            _check_range(name, value, alias_range[0], alias_range[1], None, via=key)
        _check_range(name, value, meta["lo"], meta["hi"], meta["choices"], meta["lo_open"], via=key)
        if name in values and values[name] != value:
            raise HyperparameterError(f"set twice, as {source[name]}={values[name]!r} and {key}={value!r}",
                                      where=f"hyperparameter {name}", fix="keep one of the two names")
        values[name] = value
        source[name] = key
    config = TrainConfig(**values)
    _check_combinations(config)
    return config


def _check_combinations(config: TrainConfig) -> None:
    if config.instruction_tuned and config.chat_dataset:
        raise HyperparameterError("instruction_tuned and chat_dataset are both true",
                                  where="hyperparameters instruction_tuned/chat_dataset",
                                  fix="set at most one of them to True")
    if config.bf16 and config.fp16:
        raise HyperparameterError("bf16 and fp16 are both true", where="hyperparameters bf16/fp16",
                                  fix="set at most one of them")
    if config.bf16:
        config.precision = "bf16"
    elif config.fp16:
        config.precision = "fp16"
    if config.quantization != "none" and not config.use_lora:
        raise HyperparameterError("quantized base weights can only be trained with LoRA",
                                  where="hyperparameter peft_type", fix="set peft_type=lora or turn quantization off")
    if config.quantization != "none" and config.enable_fsdp:
        raise HyperparameterError("int8/4-bit quantization is not supported together with FSDP",
                                  where="hyperparameters enable_fsdp/int8_quantization",
                                  fix="set exactly one of them to True")
    if config.enable_fsdp and config.deepspeed != "none":
        raise HyperparameterError("FSDP and DeepSpeed were both asked for",
                                  where="hyperparameters enable_fsdp/deepspeed", fix="choose one")
    if config.per_device_eval_batch_size == 0:
        raise HyperparameterError("0 is out of range", where="hyperparameter per_device_eval_batch_size",
                                  fix="use -1 (the training batch size) or a value >= 1")
    if config.max_input_length != -1 and config.max_input_length < 8:
        raise HyperparameterError(f"{config.max_input_length} is too short", where="hyperparameter max_input_length",
                                  fix="use -1 (automatic) or a value >= 8")


def markdown_table() -> str:
    """The hyperparameter reference written to docs/hyperparameters.md."""
    lines = ["| name | type | default | range / choices | meaning |", "|---|---|---|---|---|"]
    for name, spec in FIELDS.items():
        meta = spec.metadata
        if meta["choices"]:
            span = ", ".join(map(str, meta["choices"]))
        else:
            lo = "" if meta["lo"] is None else (f"> {meta['lo']}" if meta["lo_open"] else f">= {meta['lo']}")
            hi = "" if meta["hi"] is None else f"<= {meta['hi']}"
            span = " and ".join(p for p in (lo, hi) if p)
        lines.append(f"| `{name}` | {spec.type} | `{spec.default!r}` | {span} | {meta['doc']} |")
    lines += ["", "Aliases (Autopilot, Flan-T5 and Trainer names):", "",
              "| alias | means | range the alias imposes |", "|---|---|---|"]
    for alias, (name, span) in ALIASES.items():
        lines.append(f"| `{alias}` | `{name}` | {'' if span is None else f'{span[0]}-{span[1]}'} |")
    return "\n".join(lines) + "\n"
