"""The base pipeline, offline: find it, load its parts, add and merge LoRA, save the trained pipeline.

The base comes from the `model` channel (a pipeline folder or one model.tar.gz of it) or a local
model_id folder; only safetensors are loaded and nothing is downloaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from . import PIPELINE_INDEX, find_pipeline_root

log = logging.getLogger(__name__)

UNET_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
NEEDED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class Parts:
    base_dir: Path
    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    noise_scheduler: object  # DDPM, from the base's scheduler config


def resolve_base_pipeline(paths, model_id: str) -> Path:
    """The base pipeline folder: the model channel (extracting one archive), else model_id."""
    channel = paths.model_channel()
    if channel is not None:
        root = find_pipeline_root(channel)
        if root is None:
            root = _from_archive(channel, paths)
        if root is None:
            raise ModelError(f"no {PIPELINE_INDEX} found: the model channel holds no diffusers pipeline",
                             where=str(channel), fix="put a Stable Diffusion pipeline folder (model_index.json, unet/, "
                             "vae/, text_encoder/, tokenizer/, scheduler/) or one model.tar.gz of it in the channel")
        return _checked(root)
    if model_id:
        folder = Path(model_id)
        root = find_pipeline_root(folder) if folder.is_dir() else None
        if root is None:
            raise ModelError(f"{model_id!r} is not a local pipeline folder (with {PIPELINE_INDEX}), and tuneforge "
                             "never downloads weights at run time", where="hyperparameter model_id",
                             fix="pass the base pipeline in the `model` channel or set model_id to a folder in the image")
        return _checked(root)
    raise ModelError("no base model was given: the `model` channel is empty and model_id is not set",
                     where=str(paths.channel("model")),
                     fix="add a `model` channel with the Stable Diffusion pipeline, or set model_id to a local folder")


def _from_archive(channel: Path, paths) -> Path | None:
    tarballs = sorted([*channel.glob("*.tar.gz"), *channel.glob("*.tgz"), *channel.glob("*.tar")])
    if len(tarballs) != 1:
        return None
    from ..archives import extract_model_archive

    return find_pipeline_root(extract_model_archive(tarballs[0], paths.extracted_model_dir, (PIPELINE_INDEX,)))


def _checked(root: Path) -> Path:
    missing = [name for name in NEEDED if not (root / name).is_dir()]
    if missing:
        raise ModelError(f"the pipeline lacks {', '.join(missing)}/", where=str(root),
                         fix="copy the complete pipeline folder (as written by save_pretrained)")
    for name in ("unet", "vae", "text_encoder"):
        if not any((root / name).glob("*.safetensors")):
            raise ModelError(f"{name}/ holds no .safetensors weights (pickle .bin files are not loaded)",
                             where=str(root / name), fix="convert the weights to safetensors "
                             "(pipeline.save_pretrained(folder, safe_serialization=True))")
    return root


def quiet_progress_bars() -> None:
    """Per-component loading bars flood job logs (CloudWatch) and hide the metric lines."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()


def load_parts(base_dir: Path) -> Parts:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    quiet_progress_bars()
    common = dict(local_files_only=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_dir / "tokenizer", **common)
        text_encoder = CLIPTextModel.from_pretrained(base_dir / "text_encoder", use_safetensors=True, **common)
        vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae", use_safetensors=True, **common)
        unet = UNet2DConditionModel.from_pretrained(base_dir, subfolder="unet", use_safetensors=True, **common)
        noise_scheduler = DDPMScheduler.from_pretrained(base_dir, subfolder="scheduler", **common)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"the pipeline cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})",
                         where=str(base_dir), fix="copy the complete Stable Diffusion pipeline folder") from exc
    return Parts(base_dir, tokenizer, text_encoder, vae, unet, noise_scheduler)


def add_lora(model: torch.nn.Module, targets: list[str], config, seed: int) -> int:
    """Inject LoRA layers (peft) and leave only them trainable; the count of trainable values."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(seed)  # the LoRA A matrices' initialization
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      init_lora_weights="gaussian", target_modules=targets)
    inject_adapter_in_model(lora, model)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every LoRA layer into its base weight and put the plain layer back."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    if "peft_config" in vars(model):  # set by inject_adapter_in_model on the instance
        del model.peft_config
    return model


def inference_pipeline(base_dir: Path, parts: Parts | None = None, device: str = "cpu"):
    """A StableDiffusionPipeline from the base folder, with trained parts swapped in."""
    from diffusers import StableDiffusionPipeline

    kwargs = dict(local_files_only=True, use_safetensors=True, safety_checker=None, requires_safety_checker=False)
    if parts is not None:
        kwargs.update(unet=parts.unet, text_encoder=parts.text_encoder, vae=parts.vae, tokenizer=parts.tokenizer)
    pipeline = StableDiffusionPipeline.from_pretrained(base_dir, **kwargs)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)
