"""Tiny random models, one per supported family, with a tokenizer trained offline.

No weights can be downloaded where tuneforge is tested, so tests and the demo fine-tune these:
real architectures (hidden 64, 2 layers) from transformers configs, random weights, and a
byte-level BPE tokenizer trained here by the `tokenizers` library on the sample data's words.
"""

from __future__ import annotations

from pathlib import Path

from .contract import train_env

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
VOCAB_SIZE = 1000
FAMILIES = ("llama", "mistral", "mixtral", "falcon", "bloom", "gpt2", "gptj", "gpt_neo",
            "gpt_neox", "gemma", "t5")


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

    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    llama_like = dict(small, intermediate_size=128, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=False)
    configs = {
        "llama": lambda: tf.LlamaConfig(vocab_size=vocab_size, **llama_like, **ids),
        # head size 32: the smallest vLLM's CPU attention takes (the vLLM engine's tests)
        "llama_hd32": lambda: tf.LlamaConfig(vocab_size=vocab_size, **dict(llama_like, num_attention_heads=2,
                                                                            num_key_value_heads=1), **ids),
        "mistral": lambda: tf.MistralConfig(vocab_size=vocab_size, **llama_like, **ids),
        "mixtral": lambda: tf.MixtralConfig(vocab_size=vocab_size, **llama_like, num_local_experts=4,
                                            num_experts_per_tok=2, **ids),
        "gemma": lambda: tf.GemmaConfig(vocab_size=vocab_size, **dict(llama_like, num_key_value_heads=1),
                                        head_dim=16, **ids),
        "falcon": lambda: tf.FalconConfig(vocab_size=vocab_size, **small, **ids),
        "bloom": lambda: tf.BloomConfig(vocab_size=vocab_size, hidden_size=64, n_layer=2, n_head=4, **ids),
        "gpt2": lambda: tf.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4,
                                      n_positions=512, **ids),
        "gptj": lambda: tf.GPTJConfig(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4,
                                      rotary_dim=8, n_positions=512, tie_word_embeddings=False, **ids),
        "gpt_neo": lambda: tf.GPTNeoConfig(vocab_size=vocab_size, hidden_size=64, num_layers=2,
                                           num_heads=4, attention_types=[[["global", "local"], 1]],
                                           max_position_embeddings=512, window_size=256, **ids),
        "gpt_neox": lambda: tf.GPTNeoXConfig(vocab_size=vocab_size, **small, intermediate_size=128,
                                             max_position_embeddings=512, **ids),
        "t5": lambda: tf.T5Config(vocab_size=vocab_size, d_model=64, d_ff=128, d_kv=16, num_layers=2,
                                  num_decoder_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
                                  tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
                                  eos_token_id=2),
    }
    if family not in configs:
        raise ValueError(f"unknown tiny model family {family!r}; choose one of {', '.join(FAMILIES)}")
    return configs[family]()


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
