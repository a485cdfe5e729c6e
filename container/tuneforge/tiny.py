"""Tiny random models, one per supported family, with a tokenizer trained offline.

No weights can be downloaded where tuneforge is tested, so tests and the demo fine-tune these:
real architectures (hidden 64, 2 layers) from transformers configs, random weights, and a
byte-level BPE tokenizer trained here by the `tokenizers` library on the sample data's words.
"""

from __future__ import annotations

from pathlib import Path

from .contract import train_env
from .families import BY_TYPE, IDS, LLAMA_LIKE, LISTED_FAMILIES

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
VOCAB_SIZE = 1000
FAMILIES = LISTED_FAMILIES
# Tiny models that are not a family of their own. llama_hd32: head size 32, the smallest vLLM's CPU
# attention takes (the vLLM engine's tests)
TINY_VARIANTS = {
    "llama_hd32": lambda tf, vocab: tf.LlamaConfig(vocab_size=vocab, **dict(LLAMA_LIKE, num_attention_heads=2,
                                                                           num_key_value_heads=1), **IDS),
}


def default_cache_dir() -> Path:
    cache = train_env().tiny_cache
    if cache:
        return cache
    return Path(__file__).resolve().parents[2] / ".cache" / "tiny-models"


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .samples import tokenizer_corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[PAD, BOS, EOS, UNK],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS,
                                   eos_token=EOS, unk_token=UNK, model_max_length=512)


def model_config(family: str, vocab_size: int):
    import transformers as tf

    if family in TINY_VARIANTS:
        return TINY_VARIANTS[family](tf, vocab_size)
    if family not in BY_TYPE:
        raise ValueError(f"unknown tiny model family {family!r}; choose one of {', '.join(FAMILIES)}")
    return BY_TYPE[family].tiny(tf, vocab_size)


def build_tiny_model(family: str, out_dir: Path, *, seed: int = 0) -> Path:
    """Write a tiny random `family` model with the offline tokenizer to out_dir (safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, GenerationConfig

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    config = model_config(family, len(tokenizer))
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_config(config)
    model.generation_config = GenerationConfig(
        pad_token_id=0, bos_token_id=1, eos_token_id=2, max_new_tokens=32,
        decoder_start_token_id=0 if config.is_encoder_decoder else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_model(family: str, cache_dir: Path | None = None) -> Path:
    """The cached tiny model for `family`, built on first use."""
    path = Path(cache_dir or default_cache_dir()) / family
    if not (path / "config.json").exists():
        tmp = path.with_name(path.name + ".tmp")
        build_tiny_model(family, tmp)
        if not path.exists():
            tmp.rename(path)
    return path
