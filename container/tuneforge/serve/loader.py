"""Load what training wrote (merged weights, a LoRA adapter, or a plain HF folder) for serving.

`check_model_dir` only reads files, so the gunicorn master can fail fast on a bad directory
without importing torch; `load_model` runs in each worker, where CUDA may be touched.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelError
from ..model_folder import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, CONFIG_FILE, ModelMetadata, check_safetensors_file,
                            check_weights, choose_dtype, context_length, has_tokenizer, model_name,
                            is_adapter_only)
from ..data.prompt import PromptFormat
from .settings import ServeSettings

log = logging.getLogger(__name__)
ADAPTERS_DIR = "adapters"
ADAPTER_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

__all__ = ["ModelInfo", "LoadedModel", "check_model_dir", "load_model", "context_length"]


@dataclass
class ModelInfo:
    """What the directory says about itself, read without torch."""

    model_dir: Path
    metadata: ModelMetadata  # tuneforge.json; all defaults for a plain Hugging Face folder
    adapter_only: bool
    base_dir: Path | None  # weights the adapter goes on; None for full models
    prompt: PromptFormat
    name: str
    adapters: dict = field(default_factory=dict)  # name -> folder: LoRAs on these weights, by request



@dataclass
class LoadedModel:
    info: ModelInfo
    model: object
    tokenizer: object
    seq2seq: bool
    device: str
    max_input_tokens: int
    max_total_tokens: int | None  # causal: prompt + new tokens must fit; seq2seq: None
    default_max_new_tokens: int
    eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int = 0
    special_ids: frozenset = frozenset()


def check_model_dir(settings: ServeSettings) -> ModelInfo:
    """Validate the model directory (and an adapter's base) with file reads only."""
    model_dir = Path(settings.model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model directory {model_dir} does not exist",
                         fix="set SM_MODEL_DIR / TUNEFORGE_MODEL_DIR or pass --model-dir")
    metadata = ModelMetadata.read(model_dir) or ModelMetadata()
    adapter_only = is_adapter_only(model_dir, metadata)
    base_dir = _resolve_base(model_dir, metadata, settings) if adapter_only else None
    weights_dir = base_dir if adapter_only else model_dir
    if not (weights_dir / CONFIG_FILE).exists():
        raise ModelError(f"{weights_dir} has no config.json", fix="point the server at a save_pretrained folder")
    check_weights(weights_dir, allow_pickle=settings.allow_pickle, allow_pickle_hint="TUNEFORGE_ALLOW_PICKLE=true")
    for path in sorted(weights_dir.glob("*.safetensors")):  # whole files, or the master fails now, not a worker
        check_safetensors_file(path)
    if adapter_only and not (model_dir / ADAPTER_WEIGHTS).exists():
        raise ModelError(f"{model_dir} is marked adapter-only but holds no {ADAPTER_WEIGHTS}",
                         fix="copy the training job's complete model/ folder")
    if adapter_only:
        check_safetensors_file(model_dir / ADAPTER_WEIGHTS)
    name = str(metadata.base_model or model_name(model_dir))
    adapters = find_adapters(model_dir, adapter_only, name)
    return ModelInfo(model_dir, metadata, adapter_only, base_dir, metadata.prompt_format(), name, adapters)


def find_adapters(model_dir: Path, adapter_only: bool, base_name: str) -> dict[str, Path]:
    """<model_dir>/adapters/<name>/: LoRA adapters on the folder's weights, chosen per request by
    name (OpenAI `model`, TGI `parameters.adapter_id`)."""
    root = model_dir / ADAPTERS_DIR
    if not root.is_dir():
        return {}
    if adapter_only:
        raise ModelError(f"{root} holds adapters, but {model_dir} itself is only an adapter",
                         fix="put the adapters beside full base weights (a model folder with config.json)")
    adapters = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not ADAPTER_FOLDER_NAME.fullmatch(folder.name) or folder.name == base_name:
            raise ModelError(f"adapter folder name {folder.name!r} in {root} cannot be a model name",
                             fix="name it with letters, digits, '.', '_' or '-', other than the base's "
                             f"name {base_name!r}")
        for needed in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            if not (folder / needed).exists():
                raise ModelError(f"adapter {folder} holds no {needed}",
                                 fix="save each adapter with peft's save_pretrained (safetensors)")
        check_safetensors_file(folder / ADAPTER_WEIGHTS)
        adapters[folder.name] = folder
    return adapters


def _resolve_base(model_dir: Path, metadata: ModelMetadata, settings: ServeSettings) -> Path:
    """TUNEFORGE_BASE_MODEL_DIR, else tuneforge.json base_model_path, else <model_dir>/base."""
    candidates = [("TUNEFORGE_BASE_MODEL_DIR", settings.base_model_dir),
                  ("tuneforge.json base_model_path", metadata.base_model_path),
                  ("<model_dir>/base", model_dir / "base")]
    tried = []
    for label, path in candidates:
        if not path:
            continue
        path = Path(path)
        if (path / CONFIG_FILE).exists():
            return path
        tried.append(f"{label} = {path}")
    raise ModelError(
        f"{model_dir} holds only a LoRA adapter and its base model was not found (tried: "
        + ("; ".join(tried) or "nothing configured") + ")",
        fix="set TUNEFORGE_BASE_MODEL_DIR to the base model folder, or put it at <model_dir>/base")


def _pick_device(settings: ServeSettings) -> str:
    import torch

    if settings.device != "auto":
        return settings.device
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class EngineModel:
    """What the workers know of weights that live in the vLLM engine, not in the worker."""

    config: object
    generation_config: object
    dtype: str


def load_model(settings: ServeSettings, info: ModelInfo | None = None, *, weights: bool = True) -> LoadedModel:
    """Load tokenizer and model once per worker; adapters are merged for plain-model speed.

    `weights=False` (the vLLM engine holds them): the tokenizer and the model's configuration only.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    info = info or check_model_dir(settings)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = _pick_device(settings)
    dtype = choose_dtype(settings.dtype, device)
    weights_dir = info.base_dir if info.adapter_only else info.model_dir
    common = dict(trust_remote_code=settings.trust_remote_code, local_files_only=True)
    # The adapter folder carries the tokenizer training saved (it may have added a pad token).
    tokenizer_dir = info.model_dir if has_tokenizer(info.model_dir) else weights_dir
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, **common)
    config = AutoConfig.from_pretrained(weights_dir, **common)
    arch = info.metadata.architecture
    seq2seq = arch == "seq2seq" if arch else bool(getattr(config, "is_encoder_decoder", False))
    if weights:
        auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = auto.from_pretrained(weights_dir, dtype=dtype, use_safetensors=not settings.allow_pickle or None,
                                     **common)
        if info.adapter_only:
            model = _apply_adapter(model, tokenizer, info.model_dir)
        if info.adapters:
            model = _load_adapters(model, info.adapters)
        model.to(device).eval()
    else:
        try:
            generation = GenerationConfig.from_pretrained(weights_dir, local_files_only=True)
        except OSError:  # no generation_config.json
            generation = GenerationConfig.from_model_config(config)
        served = settings.dtype if settings.dtype != "auto" else str(getattr(config, "dtype", None) or "auto")
        model = EngineModel(config, generation, served.replace("torch.", ""))

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    gen = model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
    eos_ids = [e for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    context = context_length(model.config, tokenizer)
    if seq2seq:
        max_input, max_total = settings.max_input_tokens or context, None
    else:
        max_input, max_total = settings.max_input_tokens or context - 1, context
    default_new = settings.default_max_new_tokens or gen.max_new_tokens or 256
    log.info("loaded %s (%s, %s) %s as %s; inputs up to %d tokens", info.model_dir,
             "seq2seq" if seq2seq else "causal", "adapter on " + str(info.base_dir) if info.adapter_only
             else "full weights", "on " + device if weights else "for the vLLM engine", str(model.dtype).replace(
                 "torch.", ""), max_input)
    return LoadedModel(info=info, model=model, tokenizer=tokenizer, seq2seq=seq2seq, device=device,
                       max_input_tokens=max_input, max_total_tokens=max_total,
                       default_max_new_tokens=min(default_new, settings.max_new_tokens),
                       eos_token_ids=eos_ids, pad_token_id=tokenizer.pad_token_id,
                       special_ids=frozenset(tokenizer.all_special_ids))


def _load_adapters(model, adapters: dict[str, Path]):
    """Every adapter on the one base, kept apart (not merged); the engine picks one per batch."""
    from peft import PeftModel

    names = list(adapters)
    model = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters[name], adapter_name=name)
    return model


def _apply_adapter(model, tokenizer, adapter_dir: Path):
    from peft import PeftModel

    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))  # training added tokens (e.g. a pad token)
    return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
