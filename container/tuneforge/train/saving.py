"""Turn the trained model into files in the staging folder: merged, full, or adapter only."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def save_model(recipe, staging: Path | None) -> bool:
    """Write weights and tokenizer to `staging` (rank 0); returns True when only an adapter is saved."""
    cfg = recipe.config
    trainer = recipe.trainer
    model = trainer.accelerator.unwrap_model(trainer.model)
    adapter_only = cfg.use_lora and not cfg.merge_weights
    if staging is None:
        return adapter_only
    if not cfg.use_lora or adapter_only:
        model.save_pretrained(staging, safe_serialization=True)
    elif cfg.quantization != "none":
        _merge_onto_16bit_base(recipe, model, staging)
    else:
        merged = model.merge_and_unload()
        merged.save_pretrained(staging, safe_serialization=True)
    recipe.tokenizer.save_pretrained(staging)
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.pad_token_id = recipe.tokenizer.pad_token_id
        generation.eos_token_id = generation.eos_token_id or recipe.tokenizer.eos_token_id
        generation.save_pretrained(staging)
    return adapter_only


def _merge_onto_16bit_base(recipe, model, staging: Path) -> None:
    """Quantized weights cannot absorb an adapter; merge it into a fresh 16-bit copy of the base."""
    import tempfile

    from peft import PeftModel

    from ..modeling import load_model

    with tempfile.TemporaryDirectory(prefix="tuneforge-adapter-") as adapter_dir:
        model.save_pretrained(adapter_dir, safe_serialization=True)
        base = load_model(recipe.base_path, recipe.config, tokenizer=recipe.tokenizer, quantize=False).model
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
        merged.save_pretrained(staging, safe_serialization=True)
    log.info("merged the adapter onto a %s copy of the base", recipe.loaded.dtype)
