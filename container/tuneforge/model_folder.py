"""What a model folder is, for training, serving and the tests alike.

A model folder is what `save_pretrained` writes (config.json, weights, tokenizer) plus
tuneforge.json, the typed `ModelMetadata` training writes beside it: how the model was trained
(prompt format, data format, hyperparameters, metrics) and whether it holds merged weights or a
LoRA adapter only. Which weight files count, which are pickles, how long the model's context is
and which dtype "auto" means are decided here and nowhere else. File reads only: no torch at
import time, so the serving master can check a folder without touching CUDA.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ModelError

METADATA_FILE = "tuneforge.json"
FORMAT_VERSION = 1  # tuneforge.json layout; a file without one is from before versions (read as 1)

CONFIG_FILE = "config.json"
SOURCE_NAME_FILE = "tuneforge-source-name.txt"  # a converted or unpacked base's real name (model_name)
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Any one of these means the folder carries its own tokenizer (tokenizer_config.json alone does not).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "vocab.txt")
# config.json names for the context length, most specific first.
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
FALLBACK_CONTEXT = 2048  # models whose config names no context length (bloom, alibi)
# Precision names (hyperparameter `precision`, TUNEFORGE_DTYPE) -> torch dtype names.
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16",
               "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


class ModelMetadata(BaseModel):
    """tuneforge.json: everything serving needs to know that save_pretrained does not write."""

    model_config = ConfigDict(extra="allow", frozen=True)  # extra: keys a newer minor release may add

    format_version: int = FORMAT_VERSION
    tuneforge_version: str | None = None
    created: str | None = None  # UTC, ISO 8601
    task: str | None = None  # "text-to-image" for a diffusers pipeline; None: text generation
    architecture: Literal["causal", "seq2seq"] | None = None  # None: read it from config.json
    model_type: str | None = None
    base_model: str | None = None  # a name for /info and OpenAI's `model`
    base_model_path: str | None = None  # where an adapter's base weights were (adapter_only)
    adapter_only: bool = False
    data_format: str | None = None
    prompt: dict | None = None  # PromptFormat.to_dict(): the prompt layout training used
    max_input_length: int | None = None
    hyperparameters: dict = {}
    metrics: dict = {}

    def prompt_format(self):
        """The PromptFormat to serve with; a folder trained on none is served as plain text."""
        from .data.prompt import PromptFormat

        if self.prompt:
            return PromptFormat.from_dict(self.prompt)
        return PromptFormat(kind="domain", prompt_template="", completion_template="")

    def write(self, folder: Path) -> Path:
        """Write tuneforge.json, stamping the format version, this release and the time."""
        from . import __version__

        stamped = self.model_copy(update={"format_version": FORMAT_VERSION, "tuneforge_version": __version__,
                                          "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        path = Path(folder) / METADATA_FILE
        path.write_text(json.dumps(stamped.model_dump(mode="json"), indent=2, default=str) + "\n")
        return path

    @classmethod
    def from_values(cls, values: dict) -> "ModelMetadata":
        """For writers: every key must be a declared field (a typo would otherwise be saved silently)."""
        metadata = cls.model_validate(values)
        if metadata.model_extra:
            raise ValueError(f"undeclared tuneforge.json keys: {', '.join(sorted(metadata.model_extra))}")
        return metadata

    @classmethod
    def read(cls, folder: Path) -> "ModelMetadata | None":
        """The folder's tuneforge.json, or None when it has none (a plain Hugging Face folder)."""
        path = Path(folder) / METADATA_FILE
        if not path.exists():
            return None
        fix = "rewrite the file or remove it to serve the folder as a plain HF model"
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            detail = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise ModelError(f"not valid JSON ({detail})", where=str(path), fix=fix) from None
        if not isinstance(values, dict):
            raise ModelError(f"must be a JSON object, not {type(values).__name__}", where=str(path), fix=fix)
        version = values.get("format_version", 1)
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ModelError(f"format_version {version!r} is not one this release reads (1 to {FORMAT_VERSION})",
                             where=str(path), fix="serve it with the tuneforge release that trained it, or newer")
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "the file"
            raise ModelError(f"{field}: {first['msg']} (got {first['input']!r})", where=str(path), fix=fix) from None


# ---------------------------------------------------------------------- files
def has_tokenizer(folder: Path) -> bool:
    return any((Path(folder) / name).exists() for name in TOKENIZER_FILES)


def has_safetensors(folder: Path) -> bool:
    """Full weights as safetensors: one file, an index of shards, or shards alone (not an adapter)."""
    folder = Path(folder)
    if any((folder / name).exists() for name in SAFETENSORS_FILES):
        return True
    return any(not p.name.startswith("adapter_") for p in folder.glob("*.safetensors"))


def has_pickle_weights(folder: Path) -> bool:
    return any((Path(folder) / name).exists() for name in PICKLE_FILES)


def has_adapter(folder: Path) -> bool:
    folder = Path(folder)
    return (folder / ADAPTER_CONFIG).exists() and (folder / ADAPTER_WEIGHTS).exists()


def holds_weights(folder: Path) -> bool:
    """Anything a checkpoint or model can be loaded from: full safetensors weights or an adapter."""
    return has_safetensors(folder) or (Path(folder) / ADAPTER_WEIGHTS).exists()


def is_adapter_only(folder: Path, metadata: ModelMetadata | None) -> bool:
    """Marked so by training, or an adapter folder with no config.json of its own."""
    folder = Path(folder)
    if metadata is not None and metadata.adapter_only:
        return True
    return (folder / ADAPTER_CONFIG).exists() and not (folder / CONFIG_FILE).exists()


def is_complete(folder: Path) -> bool:
    """What a finished training job leaves: tuneforge.json and full weights (with config.json) or an adapter."""
    folder = Path(folder)
    if not (folder / METADATA_FILE).exists():
        return False
    return ((folder / CONFIG_FILE).exists() and has_safetensors(folder)) or has_adapter(folder)


def check_weights(folder: Path, *, allow_pickle: bool = False, allow_pickle_hint: str | None = None) -> None:
    """ModelError unless `folder` holds loadable weights: safetensors, or pickles when allowed.

    Pickle (*.bin) files can run code when loaded, so they need an explicit opt-in;
    `allow_pickle_hint` names the setting that gives it (serving has one, training has none)."""
    folder = Path(folder)
    if has_safetensors(folder):
        return
    if has_pickle_weights(folder):
        if allow_pickle:
            return
        fix = "convert them to safetensors (save_pretrained(..., safe_serialization=True))"
        if allow_pickle_hint:
            fix += f" or set {allow_pickle_hint} if you trust them"
        raise ModelError("the folder holds only pickle (*.bin) weights, which can run code when loaded",
                         where=str(folder), fix=fix)
    raise ModelError("the folder holds no model weights (*.safetensors)", where=str(folder),
                     fix="copy the complete model folder: the safetensors files beside config.json")


def model_name(folder: Path) -> str:
    """What to call the model in `folder`: the name a GGUF conversion or an archive's unpacking
    wrote there (their folders are temporary, e.g. pid-3249), else the folder's own name."""
    folder = Path(folder)
    try:
        recorded = (folder / SOURCE_NAME_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        recorded = ""
    return recorded or folder.name


def name_from_file(path: Path) -> str:
    """A model file's name without its archive or GGUF quantization suffixes:
    SmolLM2-135M-Instruct.Q4_1.gguf -> SmolLM2-135M-Instruct, llama.tar.gz -> llama."""
    import re

    name = Path(path).name
    for suffix in (".gguf", ".tar.gz", ".tgz", ".tar"):
        name = name.removesuffix(suffix)
    return re.sub(r"[.\-_](I?Q\d\w*|B?F16|F32)$", "", name, flags=re.IGNORECASE) or name


def check_safetensors_file(path: Path) -> None:
    """ModelError unless `path` is whole: a readable header whose tensors all lie inside the file
    (what loading checks first; a truncated copy fails here, in the serving master, not in a
    worker after fork). Reads the header only."""
    path = Path(path)
    size = path.stat().st_size
    fix = "copy the file again from the training job's model/ output (it is truncated or not safetensors)"
    try:
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or length > min(size - 8, 100 * 2**20):
                raise ValueError(f"its header claims {length} bytes of a {size}-byte file")
            header = json.loads(handle.read(length))
        ends = [info["data_offsets"][1] for name, info in header.items() if name != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ModelError(f"the safetensors file cannot be read ({exc})", where=str(path), fix=fix) from None
    if 8 + length + max(ends, default=0) > size:
        raise ModelError(f"the safetensors file is cut short: its tensors need {8 + length + max(ends)} bytes, "
                         f"the file has {size}", where=str(path), fix=fix)


# ---------------------------------------------------------------------- model facts
def config_context_length(model_config) -> int | None:
    """The context length the model's config declares, or None (alibi models declare none)."""
    for name in CONTEXT_FIELDS:
        value = getattr(model_config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def tokenizer_limit(tokenizer) -> int | None:
    """tokenizer.model_max_length where it is real (transformers' "no limit" is a huge sentinel)."""
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def context_length(model_config, tokenizer) -> int:
    """Longest prompt + answer the model takes: its config, else its tokenizer, else 2048."""
    return config_context_length(model_config) or tokenizer_limit(tokenizer) or FALLBACK_CONTEXT


def choose_dtype(name: str, device: str):
    """The torch dtype for a precision name; "auto" is bf16 on GPUs that have it, fp16 on other
    GPUs, fp32 on CPU. `device` is where the weights will live ("cpu", "cuda", "cuda:1")."""
    import torch

    if name != "auto":
        try:
            return getattr(torch, DTYPE_NAMES[name])
        except KeyError:
            raise ValueError(f"unknown precision {name!r}; use auto or one of {', '.join(DTYPE_NAMES)}") from None
    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
