"""A `model` channel holding an adapter-only tuneforge fine-tune (merge_weights=False) as the
base of a new job, e.g. SFT then DPO: the adapter's base model is found, the adapter merged onto
it once into the job's volume, and the new job starts from those merged weights with the
fine-tune's tokenizer and tuneforge.json (so its prompt format renders the new data)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .contract import BASE_MODEL_CHANNEL
from .errors import ModelError
from .model_folder import ADAPTER_CONFIG, CONFIG_FILE, ModelMetadata

log = logging.getLogger(__name__)

ADAPTER_FILES = {ADAPTER_CONFIG, "adapter_model.safetensors", "README.md"}
_merged: dict[tuple[Path, Path], Path] = {}  # (adapter, extract_to) -> merged folder, once per process


def is_adapter_folder(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).exists() and not (folder / CONFIG_FILE).exists()


def merged_adapter(folder: Path, extract_to: Path, base_channel: Path | None) -> Path:
    """The adapter in `folder` merged onto its base, as a plain model folder under `extract_to`."""
    key = (folder.resolve(), Path(extract_to).resolve())
    if key not in _merged or not _merged[key].exists():  # the job's end removes what it extracted
        from .archives import process_folder

        base = find_adapter_base(folder, base_channel)
        _merged[key] = _merge(folder, base, process_folder(Path(extract_to) / "merged-adapter"))
    return _merged[key]


def find_adapter_base(folder: Path, base_channel: Path | None) -> Path:
    """The `base_model` channel, else tuneforge.json base_model_path, else <folder>/base: the
    shallowest folder holding config.json inside the first of them that has one."""
    metadata = ModelMetadata.read(folder)
    candidates = [("the base_model channel", base_channel),
                  ("tuneforge.json base_model_path", metadata.base_model_path if metadata else None),
                  ("<model channel>/base", folder / "base")]
    tried = []
    for label, path in candidates:
        found = Path(path).rglob(CONFIG_FILE) if path and Path(path).is_dir() else []
        configs = sorted(found, key=lambda p: len(p.parts))
        if configs:  # plain folders only (no archive or GGUF here: modeling.find_model_root calls this module)
            return configs[0].parent
        if path:
            tried.append(f"{label} = {path}")
    raise ModelError(f"the model channel holds only a LoRA adapter and its base model was not found (tried: "
                     f"{'; '.join(tried)})", where=str(folder),
                     fix=f"add a `{BASE_MODEL_CHANNEL}` channel with the base model the adapter was trained on, or put it "
                         "in a `base` folder inside the model channel, or pass a merged model (merge_weights=True)")


def _merge(adapter: Path, base: Path, target: Path) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    config = AutoConfig.from_pretrained(base)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    model = auto.from_pretrained(base, dtype="auto")
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # the fine-tune added tokens (a pad token)
        model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    for item in adapter.iterdir():  # tokenizer, generation config, tuneforge.json
        if item.is_file() and item.name not in ADAPTER_FILES:
            shutil.copy2(item, target / item.name)
    merged.save_pretrained(target, safe_serialization=True)
    metadata = ModelMetadata.read(adapter)
    if metadata is not None:  # now a whole model: the serving side must not look for a base
        metadata.model_copy(update={"adapter_only": False, "base_model_path": None}).write(target)
    log.info("the model channel is an adapter: merged it onto %s into %s", base, target)
    return target
