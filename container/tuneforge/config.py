"""Every training hyperparameter: type, default, range, meaning and aliases, declared once.

SageMaker hands hyperparameters over as strings in several encodings ("True", "true",
"\"True\"", "5", "\"5\""): one before-validator peels the JSON quoting and pydantic coerces the
rest. JumpStart names are canonical; Autopilot, Flan-T5 and Trainer names are aliases
(Autopilot's with its own, narrower ranges). A validation error becomes a HyperparameterError
that names the field, its range or choices, and the closest valid name for a typo.
docs/hyperparameters.md is generated from this file (`tuneforge hyperparameters --markdown`).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import (AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError,
                      model_validator)
from pydantic_core import PydanticCustomError

from .errors import HyperparameterError


# The words every true/false setting accepts, in any case: hyperparameters and environment variables.
TRUE_WORDS = frozenset({"true", "1", "yes", "y", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", "off"})


def parse_flag(value: Any) -> bool:
    """A bool, 0/1 or one of TRUE_WORDS/FALSE_WORDS (JSON quoting peeled) as True/False; ValueError otherwise."""
    value = _unwrap(value)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"{value!r} is not true or false")


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


def _flag(value: Any) -> bool:
    try:
        return parse_flag(value)
    except ValueError:
        raise PydanticCustomError("flag", "not true or false") from None


def _not_a_flag(value: Any) -> Any:
    if isinstance(value, bool):  # JSON true is no number, though Python counts it as 1
        raise PydanticCustomError("number_type", "a boolean is not a number")
    return value


def _none_words(value: Any) -> Any:
    return None if value is None or str(value).strip().lower() in ("none", "null", "") else value


def _whole_number(value: Any) -> Any:
    """'4' or '4.0' -> 4, so that an int Literal matches a string encoding."""
    try:
        number = float(value)
        return int(number) if number.is_integer() and not isinstance(value, bool) else value
    except (TypeError, ValueError):
        return value


def _tri_state(value: Any) -> Any:
    """auto stays auto; a boolean in any encoding becomes "true"/"false"."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return "true" if parse_flag(value) else "false"
    except ValueError:
        return value  # the Literal reports it, with the choices


def _as_text(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value) if isinstance(value, (int, float)) else value


def _module_list(value: Any) -> Any:
    """target_modules as a comma list; a JSON list ('["q_proj", "v_proj"]') is accepted too."""
    if isinstance(value, str) and value.startswith("["):
        try:
            return ",".join(json.loads(value.replace("'", '"')))
        except (json.JSONDecodeError, TypeError):
            pass
    return _as_text(value)


Flag = Annotated[bool, BeforeValidator(_flag)]
Int = Annotated[int, BeforeValidator(_not_a_flag)]
Float = Annotated[float, BeforeValidator(_not_a_flag)]  # finite: the model sets allow_inf_nan=False
OptionalInt = Annotated[int | None, BeforeValidator(_none_words), BeforeValidator(_not_a_flag)]
Text = Annotated[str, BeforeValidator(_as_text)]
ModuleList = Annotated[str, BeforeValidator(_module_list)]
TriState = Annotated[Literal["auto", "true", "false"], BeforeValidator(_tri_state)]
Bits = Annotated[Literal[4, 8, 16], BeforeValidator(_whole_number)]


def hp(default, doc: str, *, aliases: dict[str, tuple | None] | None = None, **bounds):
    """A field: default, meaning, bounds (ge/gt/le) and aliases, each alias with the (lo, hi)
    range it imposes on top of the field's own, or None."""
    return Field(default, description=doc, validation_alias=AliasChoices(*aliases) if aliases else None,
                 json_schema_extra={"alias_ranges": aliases} if aliases else None, **bounds)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_by_name=True,
                              validate_by_alias=True)

    # --- data ---
    instruction_tuned: Flag = hp(False, "Train on prompt/completion rows from *.jsonl files (+ template.json).")
    chat_dataset: Flag = hp(False, "Train on conversations (`dialog`, `messages` or `conversations`); loss on assistant turns.")
    data_format: Literal["auto", "instruction", "chat", "domain", "table"] = hp("auto", "Force the data format instead of detecting it.")
    add_input_output_demarcation_key: Flag = hp(True, "Insert '\\n\\n### Response:\\n' between prompt and completion.")
    max_input_length: Int = hp(-1, "Longest tokenized example; -1 = min(1024, the tokenizer's limit). Longer rows are truncated and counted.", ge=-1)
    max_output_length: Int = hp(128, "Longest target for seq2seq models; also the most tokens generated per ROUGE sample.", ge=1)
    validation_split_ratio: Float = hp(0.2, "Share of train rows held out when there is no validation channel.", ge=0.0, le=0.9)
    train_data_split_seed: Int = hp(0, "Seed of the train/validation split.", ge=0)
    max_train_samples: Int = hp(-1, "Use at most this many training rows; -1 = all.", ge=-1)
    max_val_samples: Int = hp(-1, "Use at most this many validation rows; -1 = all.", ge=-1)
    preprocessing_num_workers: OptionalInt = hp(None, "Processes for tokenization; None = one.", ge=1)
    rouge_samples: Int = hp(32, "Validation rows generated for ROUGE (0 turns ROUGE off).", ge=0)
    knowledge_check: Flag = hp(True, "Ask 12 bundled general questions before and after training and report the share answered right (metrics.json general_knowledge): a drop means the fine-tune made the model forget.")
    # --- schedule ---
    epoch: Int = hp(5, "Passes over the training data.", ge=1, le=1000,
                    aliases={"epochCount": (1, 10), "epochs": None, "num_train_epochs": None})
    max_steps: Int = hp(-1, "Stop after this many optimizer steps; -1 = run all epochs.", ge=-1)
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
    evaluation_strategy: Literal["epoch", "steps", "no"] = hp("epoch", "When to evaluate: every epoch, every eval_steps, or never.",
                                                              aliases={"eval_strategy": None})
    eval_steps: Int = hp(20, "Steps between evaluations when evaluation_strategy=steps.", ge=1)
    load_best_model_at_end: Flag = hp(True, "Keep the weights with the lowest validation loss.")
    early_stopping_patience: Int = hp(3, "Stop after this many evaluations without improvement; 0 = off.", ge=0)
    early_stopping_threshold: Float = hp(0.0, "Smallest validation-loss drop that counts as improvement.", ge=0.0)
    dataloader_num_workers: Int = hp(0, "DataLoader worker processes.", ge=0)
    group_by_length: Flag = hp(True, "Batch rows of similar length together where random batches would be >= 15 % padding (shuffled mega-batches sorted by length, batches in random order, every row once per epoch): far less padding, same per-token loss. False = plain random batches.")
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

    @model_validator(mode="before")
    @classmethod
    def _from_sagemaker_strings(cls, raw: Any) -> Any:
        """Peel SageMaker's string quoting and drop the keys it adds; catch what pydantic's alias
        handling cannot: one setting given under two names, and Autopilot's narrower ranges."""
        if not isinstance(raw, dict):
            return raw
        values: dict[str, Any] = {}
        given_as: dict[str, str] = {}  # field -> the key it came under
        for key, value in raw.items():
            if str(key).startswith("sagemaker_") or key in IGNORED_KEYS:
                continue
            value = _unwrap(value)
            name = ALIASES.get(key, (key, None))[0]
            _check_alias_range(key, value)
            if name in given_as:
                _check_same_value(name, given_as[name], values[given_as[name]], key, value)
                continue
            given_as[name] = key
            values[key] = value
        return values

    @model_validator(mode="after")
    def _check_combinations(self) -> "TrainConfig":
        for broken, message, where, fix in COMBINATION_RULES:
            if broken(self):
                raise _user_error(message.format_map(self.__dict__), where, fix)
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

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


# Combinations no field can check alone: (broken?, message, where, fix); the message may name fields.
COMBINATION_RULES = [
    (lambda c: c.instruction_tuned and c.chat_dataset, "instruction_tuned and chat_dataset are both true",
     "hyperparameters instruction_tuned/chat_dataset", "set at most one of them to True"),
    (lambda c: c.bf16 and c.fp16, "bf16 and fp16 are both true", "hyperparameters bf16/fp16", "set at most one of them"),
    (lambda c: c.quantization != "none" and not c.use_lora, "quantized base weights can only be trained with LoRA",
     "hyperparameter peft_type", "set peft_type=lora or turn quantization off"),
    (lambda c: c.quantization != "none" and c.enable_fsdp, "int8/4-bit quantization is not supported together with FSDP",
     "hyperparameters enable_fsdp/int8_quantization", "set exactly one of them to True"),
    (lambda c: c.enable_fsdp and c.deepspeed != "none", "FSDP and DeepSpeed were both asked for",
     "hyperparameters enable_fsdp/deepspeed", "choose one"),
    (lambda c: c.per_device_eval_batch_size == 0, "0 is out of range", "hyperparameter per_device_eval_batch_size",
     "use -1 (the training batch size) or a value >= 1"),
    (lambda c: c.max_input_length != -1 and c.max_input_length < 8, "{max_input_length} is too short",
     "hyperparameter max_input_length", "use -1 (automatic) or a value >= 8"),
]

# Keys SageMaker and its SDKs add that are not ours to interpret.
IGNORED_KEYS = {"_tuning_objective_metric", "accept_eula"}


@dataclass(frozen=True)
class FieldSpec:
    """One hyperparameter as the docs and error messages show it."""

    name: str
    type: str  # "bool", "int", "float", "str", "int | None"
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple | None = None

    @property
    def span(self) -> str:
        """'>= 0.0 and <= 1.0', or the choices."""
        if self.choices:
            return ", ".join(map(str, self.choices))
        low = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo}"
        high = "" if self.hi is None else f"<= {self.hi}"
        return " and ".join(p for p in (low, high) if p)


def _field_spec(name: str, info) -> FieldSpec:
    annotation = info.annotation
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else None
    if choices:
        kind = type(choices[0]).__name__
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kind = " | ".join("None" if a is type(None) else a.__name__ for a in typing.get_args(annotation))
    else:
        kind = annotation.__name__
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        if isinstance(item, (annotated_types.Ge, annotated_types.Gt)):
            bounds.update(lo=getattr(item, "ge", getattr(item, "gt", None)), lo_open=isinstance(item, annotated_types.Gt))
        elif isinstance(item, annotated_types.Le):
            bounds["hi"] = item.le
    return FieldSpec(name, kind, info.default, info.description or "", choices=choices, **bounds)


FIELDS: dict[str, FieldSpec] = {name: _field_spec(name, info) for name, info in TrainConfig.model_fields.items()}

# alias -> (canonical name, (lo, hi) range the alias imposes, or None)
ALIASES: dict[str, tuple[str, tuple | None]] = {
    alias: (name, span)
    for name, info in TrainConfig.model_fields.items()
    for alias, span in ((info.json_schema_extra or {}).get("alias_ranges") or {}).items()
}


def _user_error(message: str, where: str, fix: str) -> PydanticCustomError:
    """A validation error that already reads as a HyperparameterError."""
    return PydanticCustomError("tuneforge", "{message}", {"message": message, "where": where, "fix": fix})


def _shown(value: Any) -> str:
    """A number as written ('1.5' -> 1.5), anything else quoted."""
    if isinstance(value, str):
        try:
            float(value)
            return value
        except ValueError:
            pass
    return repr(value)


def _check_alias_range(key: str, value: Any) -> None:
    span = ALIASES.get(key, (None, None))[1]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return  # the field reports a value that is no number
    if span is not None and math.isfinite(number) and not span[0] <= number <= span[1]:
        raise _user_error(f"{_shown(value)} is out of range", f"hyperparameter {key}",
                          f"use a value >= {span[0]} and <= {span[1]}")


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)  # "1e-4" and "0.0001" name the same number
    except (TypeError, ValueError):
        return str(a).strip().lower() == str(b).strip().lower()


def _check_same_value(name: str, first_key: str, first: Any, key: str, value: Any) -> None:
    if not _same(first, value):
        raise _user_error(f"set twice, as {first_key}={first!r} and {key}={value!r}", f"hyperparameter {name}",
                          "keep one of the two names")


EXPECTED = {"bool": "true or false", "int": "an integer", "float": "a finite number", "str": "a string",
            "int | None": "an integer or None", "float | None": "a finite number or None", "str | None": "a string"}
RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _hyperparameter_error(error: dict) -> HyperparameterError:
    """One pydantic error as the message a user reads: what, which hyperparameter, how to fix it."""
    if error["type"] == "tuneforge":
        return HyperparameterError(**error["ctx"])
    key = str(error["loc"][0]) if error["loc"] else "?"
    where, value = f"hyperparameter {key}", error.get("input")
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, list(FIELDS) + list(ALIASES), n=1, cutoff=0.6)
        fix = f"did you mean {close[0]!r}?" if close else "see docs/hyperparameters.md for the valid names"
        return HyperparameterError("unknown hyperparameter", where=where, fix=fix)
    spec = FIELDS[ALIASES.get(key, (key, None))[0]]
    if error["type"] == "literal_error":
        return HyperparameterError(f"{value!r} is not allowed", where=where, fix=f"use one of {spec.span}")
    if error["type"] in RANGE_ERRORS:
        return HyperparameterError(f"{_shown(value)} is out of range", where=where, fix=f"use a value {spec.span}")
    expected = EXPECTED.get(spec.type, f"a valid {spec.type}")
    return HyperparameterError(f"{value!r} is not {expected}", where=where, fix=f"set {key} to {expected}")


def parse_hyperparameters(raw: dict[str, Any]) -> TrainConfig:
    """Turn SageMaker's string map into a validated TrainConfig; the first problem (in the order
    the keys were given) as a HyperparameterError."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        order = {key: index for index, key in enumerate(raw)}
        first = min(exc.errors(), key=lambda e: order.get(e["loc"][0], -1) if e["loc"] else -1)
        raise _hyperparameter_error(first) from None


_KIND_TYPES = {"bool": Flag, "int": Int, "float": Float, "str": Text}


@functools.lru_cache(maxsize=None)
def _adapter(kind: str, modules: bool) -> TypeAdapter:
    """The type of a field written as `kind`; "X | None" also takes none/null/empty as None."""
    base = kind.removesuffix(" | None")
    target = ModuleList if modules else _KIND_TYPES.get(base, Text)
    if base != kind:
        target = Annotated[target | None, BeforeValidator(_none_words)]
    return TypeAdapter(target, config=ConfigDict(allow_inf_nan=False))


def _coerce(name: str, value: Any, kind: str) -> Any:
    """One value as a field of `kind` ("bool", "int", "float", "str", "int | None") would take it;
    HyperparameterError naming `name` otherwise. For other schemas that read SageMaker strings."""
    value = _unwrap(value)
    try:
        return _adapter(kind, name == "target_modules").validate_python(value)
    except ValidationError:
        expected = EXPECTED.get(kind, f"a valid {kind}")
        raise HyperparameterError(f"{value!r} is not {expected}", where=f"hyperparameter {name}",
                                  fix=f"set {name} to {expected}") from None


def markdown_table() -> str:
    """The hyperparameter reference written to docs/hyperparameters.md."""
    lines = ["| name | type | default | range / choices | meaning |", "|---|---|---|---|---|"]
    for name, spec in FIELDS.items():
        cells = (f"`{name}`", spec.type, f"`{spec.default!r}`", spec.span, spec.doc)
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines += ["", "Aliases (Autopilot, Flan-T5 and Trainer names):", "",
              "| alias | means | range the alias imposes |", "|---|---|---|"]
    for alias, (name, span) in ALIASES.items():
        lines.append(f"| `{alias}` | `{name}` | {'' if span is None else f'{span[0]}-{span[1]}'} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """A markdown table cell: a bare `|` (as in `int | None`) would end the cell early."""
    return str(text).replace("|", "\\|")
