"""What a language-model checkpoint depends on: resuming it under other values fails or trains
something else (job/resume.py compares it with the one in the checkpoint's manifest)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..job import distributed


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:16]


def data_fingerprint(features) -> str:
    import numpy as np

    h = hashlib.sha256()
    for feature in features:
        ids = np.asarray(feature["input_ids"], dtype=np.int64)
        h.update(np.int64(ids.size).tobytes())
        h.update(ids.tobytes())
    return h.hexdigest()[:16]


def run_identity(recipe) -> dict:
    """What a checkpoint of this run depends on: resuming it under other values fails or trains
    something else. World size matters only where the state is sharded (DeepSpeed, FSDP)."""
    cfg = recipe.config
    config_file = Path(recipe.base_path) / "config.json"
    method = (f"lora r={cfg.lora_r} targets={cfg.target_modules or 'default'}" if cfg.use_lora else "full")
    identity = {
        "method": method,
        "base_model": _digest(config_file.read_bytes()) if config_file.is_file() else str(recipe.base_path),
        "train_from_scratch": bool(cfg.train_from_scratch),
        # computed while tokenizing (data/arrow.py); hashing a memory-mapped dataset again costs ~20 s per 1 M rows
        "data": recipe.train_tokens.fingerprint or data_fingerprint(recipe.train_tokens.features),
        "engine": recipe.plan.engine,  # llm/plan.py: "plain" where checkpoints hold whole weights
    }
    if recipe.ds_config or recipe.fsdp_active:
        identity["world_size"] = distributed.world_size()
    return identity
