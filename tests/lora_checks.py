"""Checks shared by the tests that merge a trained LoRA adapter into the tiny Llama."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file


def assert_merged_is_base_plus_adapter(model_dir: Path, base_dir: Path, checkpoint: Path, layers: int = 2) -> None:
    """model/ weights == base + B @ A * alpha / r on the adapted projections (the adapter as the
    last checkpoint holds it), untouched elsewhere, with no LoRA keys left."""
    adapter = load_file(str(checkpoint / "adapter_model.safetensors"))
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    base, merged = load_file(str(base_dir / "model.safetensors")), load_file(str(model_dir / "model.safetensors"))
    assert merged.keys() == base.keys()
    for layer in range(layers):
        for proj in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            delta = adapter[f"{prefix}.lora_B.weight"] @ adapter[f"{prefix}.lora_A.weight"] * scale
            assert delta.abs().max() > 0
            name = f"model.layers.{layer}.self_attn.{proj}.weight"
            torch.testing.assert_close(merged[name], base[name] + delta, atol=1e-6, rtol=1e-5)
    assert torch.equal(merged["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
