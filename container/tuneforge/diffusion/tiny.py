"""A tiny random Stable Diffusion pipeline, built offline the way diffusers' own pipeline tests do.

UNet2DConditionModel with block_out_channels (32, 64) and cross_attention_dim 32, an AutoencoderKL
with [32, 64] (so latents are half the image size, not an eighth), a CLIPTextModel of hidden size
32, and a CLIP tokenizer written here from a small byte-level vocabulary and merges. A DreamBooth
job on five 64 x 64 images trains in seconds on a CPU with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..byte_level import bytes_to_unicode

START, END = "<|startoftext|>", "<|endoftext|>"
# Words whose merges the tokenizer holds, so that typical prompts become a few tokens each.
WORDS = ("a", "an", "the", "of", "in", "on", "with", "and", "photo", "picture", "painting", "dog", "cat",
         "doppler", "sks", "person", "red", "blue", "green", "beach", "park", "snow", "city", "style")
TEXT_MAX_LENGTH = 77  # as Stable Diffusion's CLIP tokenizer


def vocab_and_merges(words=WORDS) -> tuple[dict[str, int], list[str]]:
    """Every byte, alone and word-final (`</w>`), then each word built up one merge at a time."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pair = f"{parts[0]} {parts[1]}"
            merged = parts[0] + parts[1]
            if pair not in merges:
                merges.append(pair)
                tokens.append(merged)
            parts = [merged] + parts[2:]
    tokens += [START, END]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def write_tokenizer(folder: Path) -> Path:
    """vocab.json + merges.txt + tokenizer_config.json, loadable by CLIPTokenizer."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], pad_token="!",
                              model_max_length=TEXT_MAX_LENGTH)
    tokenizer.save_pretrained(folder)
    return folder


def build_components(tokenizer_dir: Path, seed: int = 0) -> dict:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=(2, 4), use_linear_projection=True)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
                        sample_size=64)
    torch.manual_seed(seed)
    text_config = CLIPTextConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, hidden_size=32, intermediate_size=37,
                                 layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2,
                                 projection_dim=32, vocab_size=len(tokenizer),
                                 max_position_embeddings=TEXT_MAX_LENGTH)
    text_encoder = CLIPTextModel(text_config)
    return {"unet": unet, "scheduler": scheduler, "vae": vae, "text_encoder": text_encoder,
            "tokenizer": tokenizer, "safety_checker": None, "feature_extractor": None}


def build_tiny_pipeline(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random StableDiffusionPipeline folder (safetensors) to out_dir."""
    import tempfile

    from diffusers import StableDiffusionPipeline

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as scratch:
        components = build_components(write_tokenizer(Path(scratch) / "tokenizer"), seed=seed)
        pipeline = StableDiffusionPipeline(**components, requires_safety_checker=False)
        pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def tiny_pipeline(cache_dir: Path | None = None) -> Path:
    """The cached tiny pipeline, built on first use (next to the tiny language models)."""
    from ..tiny import default_cache_dir

    path = Path(cache_dir or default_cache_dir()) / "stable-diffusion"
    if not (path / "model_index.json").exists():
        staging = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        build_tiny_pipeline(staging)
        try:
            os.rename(staging, path)
        except OSError:  # another process finished first
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return path
