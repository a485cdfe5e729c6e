"""Load the base model and tokenizer offline, pick dtype and attention, apply quantization and LoRA."""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import HyperparameterError, ModelError, ResourceError
from .model_folder import check_weights, choose_dtype, has_tokenizer

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    model: torch.nn.Module
    tokenizer: object
    path: Path
    seq2seq: bool
    dtype: torch.dtype


def find_model_root(folder: Path, extract_to: Path | None = None, base_channel: Path | None = None) -> Path:
    """The folder holding config.json: the channel itself, a sub-folder, an extracted tarball, a
    converted GGUF file or an adapter-only fine-tune merged onto its base (written under
    `extract_to`, on the job's own volume; see archives.py, gguf.py and adapter_base.py)."""
    from .adapter_base import is_adapter_folder, merged_adapter

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    if extract_to is not None and is_adapter_folder(folder):
        return merged_adapter(folder, extract_to, base_channel)
    configs = sorted(folder.rglob("config.json"), key=lambda p: len(p.parts))
    if configs:
        return configs[0].parent
    tarballs = sorted([*folder.glob("*.tar.gz"), *folder.glob("*.tgz"), *folder.glob("*.tar")])
    if len(tarballs) == 1 and extract_to is not None:
        from .archives import extract_model_archive

        return find_model_root(extract_model_archive(tarballs[0], extract_to), extract_to, base_channel)
    from .gguf import convert_gguf, find_gguf

    gguf_file = find_gguf(folder)
    if gguf_file is not None and extract_to is not None:
        from .archives import process_folder

        return convert_gguf(gguf_file, process_folder(extract_to))
    if len(tarballs) > 1:
        raise ModelError(f"{len(tarballs)} archives found ({', '.join(t.name for t in tarballs)})", where=str(folder),
                         fix="put exactly one model archive (or one extracted model folder) in the model channel")
    raise ModelError("no config.json found", where=str(folder),
                     fix="put a Hugging Face model folder (config.json, *.safetensors, tokenizer), a model.tar.gz "
                         "of one, or one .gguf file in the model channel")


def resolve_base_model(paths, config) -> Path:
    channel = paths.model_channel()
    if channel is not None:
        return find_model_root(channel, paths.extracted_model_dir, paths.base_model_channel())
    if config.model_id:
        local = Path(config.model_id)
        if local.is_dir():
            return find_model_root(local, paths.extracted_model_dir)
        raise ModelError(f"{config.model_id!r} is not a local folder, and tuneforge never downloads weights at run time",
                         where="hyperparameter model_id",
                         fix="pass the base model in the `model` channel or set model_id to a folder in the image")
    raise ModelError("no base model was given: the `model` channel is empty and model_id is not set",
                     where=str(paths.channel("model")),
                     fix="add a `model` input channel with the base weights, or set model_id to a local folder")


def has_cuda() -> bool:
    return torch.cuda.is_available()


# The package each FlashAttention kernel comes in, as transformers imports it.
FLASH_PACKAGES = {"flash_attention_2": ("flash_attn", "pip install flash-attn --no-build-isolation"),
                  "flash_attention_3": ("flash_attn_interface", "build flash-attn's hopper/ package (FlashAttention 3)")}


def pick_attention(config) -> str:
    """The attn_implementation handed to from_pretrained: auto = FlashAttention 2 where it runs
    (CUDA and the flash_attn package), else SDPA. An explicit FlashAttention kernel that cannot run
    here fails now rather than deep inside transformers."""
    choice = config.attn_implementation
    if choice == "auto":
        return "flash_attention_2" if has_cuda() and _imports("flash_attn") else "sdpa"
    if choice in FLASH_PACKAGES:
        package, install = FLASH_PACKAGES[choice]
        missing = "no GPU is visible" if not has_cuda() else (
            None if _imports(package) else f"the {package} package is not installed")
        if missing:
            raise HyperparameterError(f"{choice} needs an NVIDIA GPU and the {package} package, and {missing}",
                                      where="hyperparameter attn_implementation",
                                      fix=f"set attn_implementation=auto (or sdpa), or run on a GPU after: {install}")
    return choice


def _imports(package: str) -> bool:
    try:
        importlib.import_module(package)
    except Exception:  # noqa: BLE001 - a broken build (CUDA/ABI mismatch) fails with many kinds of error
        return False
    return True


def pick_dtype(config) -> torch.dtype:
    """Weights dtype (model_folder.choose_dtype); bf16/fp16 training needs a GPU."""
    precision = config.effective_precision
    if precision in ("bf16", "fp16") and not has_cuda():
        raise ResourceError(f"precision {precision} needs a GPU and none is visible", where="hyperparameter precision",
                            fix="use precision=auto or fp32 on CPU")
    return choose_dtype(precision, "cuda" if has_cuda() else "cpu")


def read_model_config(path: Path, config):
    """The base model's config.json, read once; a clear ModelError when it is missing or broken."""
    from transformers import AutoConfig

    config_file = Path(path) / "config.json"
    try:
        json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read config.json ({exc.__class__.__name__}: {exc})", where=str(config_file),
                         fix="put the model's config.json (from save_pretrained) beside its weights") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"config.json is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                         where=str(config_file), fix="replace it with the config.json save_pretrained wrote") from None
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=config.trust_remote_code)
    except (ValueError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        fix = ("set trust_remote_code=True only if you trust this model's code" if "trust_remote_code" in str(exc)
               else "use a config.json written by transformers' save_pretrained for a supported model_type")
        raise ModelError(f"cannot read the model config ({first})", where=str(config_file), fix=fix) from None


def load_tokenizer(path: Path, config):
    from transformers import AutoTokenizer

    path = Path(path)
    if not has_tokenizer(path):
        raise ModelError("no tokenizer files found (tokenizer.json, tokenizer.model, vocab.json, ...)", where=str(path),
                         fix="save the tokenizer beside the weights (tokenizer.save_pretrained(folder))")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True,
                                                  trust_remote_code=config.trust_remote_code)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelError(f"the tokenizer cannot be loaded ({first})", where=str(path),
                         fix="save a complete tokenizer beside the weights (tokenizer.save_pretrained(folder))") from None
    if tokenizer.pad_token is None:
        # pad must not be EOS: a model whose EOS is masked like padding never learns to stop.
        if tokenizer.unk_token is not None and tokenizer.unk_token != tokenizer.eos_token:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    if tokenizer.eos_token_id is None:
        raise ModelError("the tokenizer has no EOS token", where=str(path),
                         fix="set eos_token in tokenizer_config.json")
    if config.chat_template:
        tokenizer.chat_template = config.chat_template
    return tokenizer


def quantization_config(config, dtype):
    """bitsandbytes settings for int8/4-bit bases. GPU only: bitsandbytes' CPU kernels run, but far
    slower than fp32 there, so a CPU job with quantization on is almost surely a mistake.
    TUNEFORGE_ALLOW_CPU_QUANTIZATION=1 runs it anyway (the tests use it to exercise this path)."""
    from .contract import train_env

    if config.quantization == "none":
        return None
    if not has_cuda() and not train_env().allow_cpu_quantization:
        raise ResourceError(f"{config.quantization} quantization needs an NVIDIA GPU (bitsandbytes) and none is visible",
                            where="hyperparameters int8_quantization/load_in_4bit/bits",
                            fix="run on a GPU instance, or turn quantization off for CPU runs")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ResourceError(f"{config.quantization} quantization needs the bitsandbytes package, which is not installed",
                            where="hyperparameters int8_quantization/load_in_4bit/bits",
                            fix="pip install 'tuneforge[train]' (it brings bitsandbytes on Linux), or turn quantization off")
    from transformers import BitsAndBytesConfig

    if config.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=config.quant_type,
                              bnb_4bit_use_double_quant=config.double_quant, bnb_4bit_compute_dtype=dtype)


def load_model(path: Path, config, *, tokenizer=None, dtype: torch.dtype | None = None,
               quantize: bool = True, model_config=None) -> Loaded:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    path = Path(path)
    tokenizer = tokenizer or load_tokenizer(path, config)
    dtype = dtype or pick_dtype(config)
    model_config = model_config or read_model_config(path, config)
    if not config.train_from_scratch:
        check_weights(path)  # safetensors only: training never loads pickles
    seq2seq = bool(getattr(model_config, "is_encoder_decoder", False))
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    # LoRA trains a frozen base: keep it in the compute dtype. Full fine-tuning keeps fp32 master
    # weights and gets bf16/fp16 through autocast instead.
    load_dtype = dtype if (config.use_lora or not has_cuda()) else torch.float32
    attention, auto_attention = pick_attention(config), config.attn_implementation == "auto"
    kwargs = dict(local_files_only=True, trust_remote_code=config.trust_remote_code, dtype=load_dtype)
    quant = quantization_config(config, dtype) if quantize else None
    if quant is not None:
        kwargs["quantization_config"] = quant
    if config.train_from_scratch:
        model = _with_attention(lambda **extra: auto.from_config(model_config, dtype=load_dtype, **extra), attention,
                                chosen_by_auto=auto_attention)
    else:
        model = _with_attention(lambda **extra: _from_pretrained(auto, path, {**kwargs, **extra}), attention,
                                chosen_by_auto=auto_attention)
    if quant is not None:
        keep_4bit_weights_trainable(model)
    embeddings = model.get_input_embeddings()
    # num_embeddings, not weight.shape: under ZeRO-3 (zero.Init) the weight is an empty shard
    if len(tokenizer) > (getattr(embeddings, "num_embeddings", None) or embeddings.weight.shape[0]):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config.eos_token_id is None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id
    return Loaded(model, tokenizer, path, seq2seq, dtype)


def _with_attention(load, attention: str, *, chosen_by_auto: bool):
    """load(attn_implementation=...). Where auto chose SDPA and the architecture lacks it, transformers'
    own default instead (eager); an explicit choice the architecture lacks is the user's to change."""
    try:
        return load(attn_implementation=attention)
    except ValueError as exc:
        if "attn" not in str(exc).lower() and "attention" not in str(exc).lower():
            raise
        if chosen_by_auto and attention == "sdpa":
            log.info("this architecture has no SDPA attention: using transformers' default")
            return load()
        raise ModelError(f"attn_implementation={attention} is not supported by this model ({str(exc).splitlines()[0]})",
                         where="hyperparameter attn_implementation", fix="set attn_implementation=auto or eager") from None


def keep_4bit_weights_trainable(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights into its CPU inference layout.

    On CPUs with AVX512-BF16, a Linear4bit that runs once in eval mode without gradients (the
    baseline evaluation, the ROUGE answers) converts its weight, for good, to a layout whose
    kernel (gemv_4bit) has no backward: every later training step then computes no gradient
    through the base layers and QLoRA "trains" without learning. The flag is the module's own
    switch for that conversion; off, the layer computes as on any other CPU. Returns the number of
    layers switched."""
    switched = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            switched += 1
    return switched


def _from_pretrained(auto, path: Path, kwargs: dict):
    """from_pretrained with the weight files' own errors (truncated, not safetensors) made clear."""
    from safetensors import SafetensorError

    try:
        return auto.from_pretrained(path, use_safetensors=True, **kwargs)
    except (SafetensorError, EOFError) as exc:
        raise ModelError(f"the safetensors weights cannot be read ({exc}): the file is truncated or not safetensors",
                         where=str(path), fix="copy the weights again, complete (check their size and checksum)") from None
    except OSError as exc:
        if "safetensors" not in str(exc).lower() and "header" not in str(exc).lower():
            raise
        raise ModelError(f"the weights cannot be read ({str(exc).splitlines()[0]})", where=str(path),
                         fix="copy the weights again, complete (check their size and checksum)") from None


def apply_lora(loaded: Loaded, config):
    """Wrap the model with LoRA adapters; the family's default targets unless target_modules says."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    model = loaded.model
    if config.quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    targets = default_lora_targets(model) if not config.target_modules.strip() else config.target_modules.strip()
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    lora = dict(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                task_type=TaskType.SEQ_2_SEQ_LM if loaded.seq2seq else TaskType.CAUSAL_LM)
    linear_names = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    try:
        return get_peft_model(model, LoraConfig(target_modules=targets, **lora))
    except ValueError as exc:
        raise ModelError(f"target_modules {','.join(targets) if isinstance(targets, list) else targets!r} cannot be "
                         f"adapted on this model ({str(exc).splitlines()[0]})", where="hyperparameter target_modules",
                         fix=f"name linear layers, from: {', '.join(linear_names)}") from None


def default_lora_targets(model) -> str:
    """peft's per-family defaults (Llama, Mistral, Mixtral, Gemma: q_proj,v_proj), else all-linear."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    names = DEFAULTS.get(getattr(model.config, "model_type", ""))
    return ",".join(names) if names else "all-linear"


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights count as what they stand for, not the packed
    bytes bitsandbytes stores (two 4-bit values per element)."""
    def numel(p) -> int:
        return p.numel() * 2 if type(p).__name__ == "Params4bit" else p.numel()

    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    total = sum(numel(p) for p in model.parameters())
    return trainable, total
