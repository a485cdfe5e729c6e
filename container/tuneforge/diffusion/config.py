"""Every text-to-image (DreamBooth) hyperparameter: type, default, range and meaning.

JumpStart's names and defaults for Stable Diffusion 2.1 fine-tuning are canonical; diffusers'
train_dreambooth.py names are aliases. Values arrive in every SageMaker string encoding and are
read with the same helpers as the language-model hyperparameters (tuneforge.config).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from ..config import IGNORED_KEYS, _coerce
from ..errors import HyperparameterError


def hp(default, doc: str, *, lo=None, hi=None, choices=None, lo_open=False):
    """A field with its meaning and range, as the docs and error messages show them."""
    return field(default=default, metadata={"doc": doc, "lo": lo, "hi": hi, "choices": choices, "lo_open": lo_open})


@dataclass
class DreamBoothConfig:
    # --- schedule (JumpStart names and defaults) ---
    epochs: int = hp(20, "Passes over the instance images.", lo=1, hi=10000)
    max_steps: int | None = hp(None, "Stop after this many optimizer steps (wins over epochs); None = run all epochs.", lo=1)
    batch_size: int = hp(1, "Instance images per step (as many class images are added with prior preservation).", lo=1, hi=256)
    learning_rate: float = hp(2e-6, "Peak learning rate (LoRA wants about 1e-4).", lo=0.0, hi=1.0, lo_open=True)
    lr_scheduler: str = hp("constant", "Learning-rate schedule.",
                           choices=("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                                    "polynomial"))
    lr_warmup_steps: int = hp(0, "Warm-up steps of the schedule.", lo=0)
    adam_weight_decay: float = hp(0.01, "AdamW weight decay.", lo=0.0, hi=1.0)
    adam_beta1: float = hp(0.9, "AdamW beta1.", lo=0.0, hi=1.0)
    adam_beta2: float = hp(0.999, "AdamW beta2.", lo=0.0, hi=1.0)
    adam_epsilon: float = hp(1e-8, "AdamW epsilon.", lo=0.0, hi=1.0, lo_open=True)
    gradient_accumulation_steps: int = hp(1, "Micro-batches per optimizer step.", lo=1, hi=1024)
    max_grad_norm: float = hp(1.0, "Gradient clipping norm (0 = off).", lo=0.0)
    seed: int = hp(0, "Seed of noise, timesteps, data order, LoRA initialization and the before/after images.", lo=0)
    # --- data ---
    with_prior_preservation: bool = hp(False, "Also train on class images (class_data_dir/, the rest generated from class_prompt) so the model keeps its idea of the class.")
    num_class_images: int = hp(100, "Class images used with prior preservation; missing ones are generated with the base model.", lo=1, hi=100000)
    prior_loss_weight: float = hp(1.0, "Weight of the class images' loss.", lo=0.0)
    center_crop: bool = hp(False, "Crop images at the center after resizing (else at a random place).")
    resolution: int = hp(0, "Training image side in pixels, a multiple of 8; 0 = the model's own (unet sample_size x the VAE's scale).", lo=0, hi=4096)
    # --- method ---
    peft_type: str = hp("none", "none = fine-tune the whole UNet (as JumpStart); lora = train LoRA adapters, merged into the saved pipeline.",
                        choices=("none", "lora"))
    train_text_encoder: bool = hp(False, "Train the text encoder too (its LoRA adapters with peft_type=lora).")
    lora_r: int = hp(4, "LoRA rank.", lo=1, hi=1024)
    lora_alpha: int = hp(4, "LoRA scaling numerator.", lo=1, hi=4096)
    lora_dropout: float = hp(0.0, "Dropout on the LoRA input.", lo=0.0, hi=1.0)
    gradient_checkpointing: bool = hp(False, "Recompute UNet activations in backward to save memory.")
    precision: str = hp("auto", "auto = bf16 autocast on GPUs that have it, else fp32; fp32; bf16 (GPU only).",
                        choices=("auto", "fp32", "bf16"))
    # --- images made by the job ---
    num_inference_steps: int = hp(30, "Denoising steps for generated class images and the before/after images.", lo=1, hi=1000)
    guidance_scale: float = hp(7.5, "Classifier-free guidance of those images.", lo=0.0, hi=100.0)
    sample_batch_size: int = hp(4, "Class images generated per call.", lo=1, hi=256)
    num_report_images: int = hp(2, "Images of the instance prompt made before and after training (output/data/image_grid.png); 0 = none.", lo=0, hi=16)
    compute_fid: bool = hp(False, "Report fid_score (needs Inception-v3 weights, which the image does not ship: True fails at the start).")
    # --- model and checkpoints ---
    model_id: str = hp("", "Local pipeline folder with the base model, used when there is no `model` channel.")
    checkpoint_steps: int = hp(500, "Save a resumable checkpoint to /opt/ml/checkpoints every this many steps; 0 = only when stopped (SIGTERM).", lo=0)
    save_total_limit: int = hp(1, "Checkpoints to keep in /opt/ml/checkpoints.", lo=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def use_lora(self) -> bool:
        return self.peft_type == "lora"


FIELDS = {f.name: f for f in dataclasses.fields(DreamBoothConfig)}

# alias -> canonical name (diffusers' train_dreambooth.py and the language-model names)
ALIASES: dict[str, str] = {
    "epoch": "epochs", "num_train_epochs": "epochs", "max_train_steps": "max_steps",
    "train_batch_size": "batch_size", "per_device_train_batch_size": "batch_size",
    "lr_scheduler_type": "lr_scheduler", "weight_decay": "adam_weight_decay",
    "checkpointing_steps": "checkpoint_steps", "checkpoints_total_limit": "save_total_limit",
    "rank": "lora_r",
}


def parse_diffusion_hyperparameters(raw: dict[str, Any]) -> DreamBoothConfig:
    """SageMaker's string map -> a validated DreamBoothConfig (HyperparameterError naming the key)."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, raw_value in raw.items():
        if key.startswith("sagemaker_") or key in IGNORED_KEYS:
            continue
        name = ALIASES.get(key, key)
        if name not in FIELDS:
            close = difflib.get_close_matches(key, list(FIELDS) + list(ALIASES), n=1, cutoff=0.6)
            fix = f"did you mean {close[0]!r}?" if close else "see docs/hyperparameters.md (text-to-image) for the valid names"
            raise HyperparameterError("unknown text-to-image hyperparameter", where=f"hyperparameter {key}", fix=fix)
        spec = FIELDS[name]
        value = _coerce(key, raw_value, spec.type)
        _check_range(key, value, spec.metadata)
        if name in values and values[name] != value:
            raise HyperparameterError(f"set twice, as {source[name]}={values[name]!r} and {key}={value!r}",
                                      where=f"hyperparameter {name}", fix="keep one of the two names")
        values[name], source[name] = value, key
    config = DreamBoothConfig(**values)
    _check_combinations(config)
    return config


def span(meta) -> str:
    """'>= 0.0 and <= 1.0', or the choices."""
    if meta["choices"]:
        return ", ".join(map(str, meta["choices"]))
    low = "" if meta["lo"] is None else (f"> {meta['lo']}" if meta["lo_open"] else f">= {meta['lo']}")
    high = "" if meta["hi"] is None else f"<= {meta['hi']}"
    return " and ".join(p for p in (low, high) if p)


def _check_range(key: str, value: Any, meta) -> None:
    if value is None:
        return
    if meta["choices"] is not None:
        if value not in meta["choices"]:
            raise HyperparameterError(f"{value!r} is not allowed", where=f"hyperparameter {key}",
                                      fix=f"use one of {span(meta)}")
        return
    lo, hi = meta["lo"], meta["hi"]
    too_low = lo is not None and (value <= lo if meta["lo_open"] else value < lo)
    if too_low or (hi is not None and value > hi):
        raise HyperparameterError(f"{value!r} is out of range", where=f"hyperparameter {key}",
                                  fix=f"use a value {span(meta)}")


def _check_combinations(config: DreamBoothConfig) -> None:
    if config.resolution % 8:
        raise HyperparameterError(f"{config.resolution} is not a multiple of 8", where="hyperparameter resolution",
                                  fix="use a multiple of 8 (512 for Stable Diffusion 2.1 base, 768 for 2.1) "
                                      "or 0 for the model's own")
    if config.compute_fid:
        raise HyperparameterError("fid_score needs the Inception-v3 weights of pytorch-fid, which this image does "
                                  "not ship (no weights are downloaded at run time)", where="hyperparameter compute_fid",
                                  fix="set compute_fid to False; compare the before/after images in output/data/image_grid.png")


def markdown_table() -> str:
    """The text-to-image section of docs/hyperparameters.md."""
    lines = ["## Text-to-image (Stable Diffusion DreamBooth)", "",
             "Used when the job is text-to-image: the training channel holds `dataset_info.json`, or the base model "
             "(the `model` channel or `model_id`) is a diffusers pipeline (`model_index.json`). See "
             "[diffusion.md](diffusion.md).", "",
             "| name | type | default | range / choices | meaning |", "|---|---|---|---|---|"]
    for name, spec in FIELDS.items():
        kind = spec.type.replace("|", "\\|")  # a bare | would end the table cell
        lines.append(f"| `{name}` | {kind} | `{spec.default!r}` | {span(spec.metadata)} | {spec.metadata['doc']} |")
    lines += ["", "Aliases (diffusers' train_dreambooth.py and language-model names):", "",
              "| alias | means |", "|---|---|"]
    lines += [f"| `{alias}` | `{name}` |" for alias, name in ALIASES.items()]
    return "\n".join(lines) + "\n"
