"""The model families tuneforge knows, one row each: adding a family is adding a row here.

A row holds everything the code asks about a family (its transformers `model_type`):
- tiny: the small random config tests and the demo train (hidden 64, 2 layers), built from the
  transformers module and the tokenizer's vocabulary size, so nothing imports transformers here;
- packs: its causal LM takes position_ids into its attention (mask or varlen kernel), so packed
  rows stay apart (tests/unit/test_packing.py). Not bloom (ALiBi) nor falcon;
- plain_head: its logits are lm_head(last hidden state), nothing more (no soft-capping or scaling),
  so llm/loss.py may compute the loss a chunk at a time (tests/unit/test_loss.py);
- listed: `tuneforge tiny-model` offers it and tests/e2e/test_families.py trains it (qwen2, qwen3 and
  phi3 are checked by the packing and loss tests only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
LLAMA_LIKE = dict(SMALL, intermediate_size=128, num_key_value_heads=2, max_position_embeddings=512,
                  tie_word_embeddings=False)
QWEN_LIKE = dict(SMALL, intermediate_size=128, num_key_value_heads=2, max_position_embeddings=512)


@dataclass(frozen=True)
class Family:
    model_type: str
    tiny: Callable  # (transformers module, vocab_size) -> a tiny PretrainedConfig
    packs: bool
    plain_head: bool
    listed: bool = True


FAMILY_TABLE = (
    Family("llama", lambda tf, vocab: tf.LlamaConfig(vocab_size=vocab, **LLAMA_LIKE, **IDS),
           packs=True, plain_head=True),
    Family("mistral", lambda tf, vocab: tf.MistralConfig(vocab_size=vocab, **LLAMA_LIKE, **IDS),
           packs=True, plain_head=True),
    Family("mixtral", lambda tf, vocab: tf.MixtralConfig(vocab_size=vocab, **LLAMA_LIKE, num_local_experts=4,
                                                         num_experts_per_tok=2, **IDS),
           packs=True, plain_head=True),
    Family("falcon", lambda tf, vocab: tf.FalconConfig(vocab_size=vocab, **SMALL, **IDS),
           packs=False, plain_head=True),
    Family("bloom", lambda tf, vocab: tf.BloomConfig(vocab_size=vocab, hidden_size=64, n_layer=2, n_head=4, **IDS),
           packs=False, plain_head=True),
    Family("gpt2", lambda tf, vocab: tf.GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4,
                                                   n_positions=512, **IDS),
           packs=True, plain_head=True),
    Family("gptj", lambda tf, vocab: tf.GPTJConfig(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, rotary_dim=8,
                                                   n_positions=512, tie_word_embeddings=False, **IDS),
           packs=True, plain_head=True),
    Family("gpt_neo", lambda tf, vocab: tf.GPTNeoConfig(vocab_size=vocab, hidden_size=64, num_layers=2, num_heads=4,
                                                        attention_types=[[["global", "local"], 1]],
                                                        max_position_embeddings=512, window_size=256, **IDS),
           packs=True, plain_head=True),
    Family("gpt_neox", lambda tf, vocab: tf.GPTNeoXConfig(vocab_size=vocab, **SMALL, intermediate_size=128,
                                                          max_position_embeddings=512, **IDS),
           packs=True, plain_head=True),
    Family("gemma", lambda tf, vocab: tf.GemmaConfig(vocab_size=vocab, **dict(LLAMA_LIKE, num_key_value_heads=1),
                                                     head_dim=16, **IDS),
           packs=True, plain_head=True),
    Family("t5", lambda tf, vocab: tf.T5Config(vocab_size=vocab, d_model=64, d_ff=128, d_kv=16, num_layers=2,
                                               num_decoder_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
                                               tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
                                               eos_token_id=2),
           packs=False, plain_head=False),  # encoder-decoder: neither packed nor chunked
    Family("qwen2", lambda tf, vocab: tf.Qwen2Config(vocab_size=vocab, **QWEN_LIKE, **IDS),
           packs=True, plain_head=True, listed=False),
    Family("qwen3", lambda tf, vocab: tf.Qwen3Config(vocab_size=vocab, **QWEN_LIKE, **IDS),
           packs=True, plain_head=True, listed=False),
    Family("phi3", lambda tf, vocab: tf.Phi3Config(vocab_size=vocab, **QWEN_LIKE, **IDS),
           packs=True, plain_head=True, listed=False),
)
BY_TYPE = {family.model_type: family for family in FAMILY_TABLE}
LISTED_FAMILIES = tuple(family.model_type for family in FAMILY_TABLE if family.listed)
PACKING_FAMILIES = frozenset(family.model_type for family in FAMILY_TABLE if family.packs)
CHUNKED_LOSS_FAMILIES = frozenset(family.model_type for family in FAMILY_TABLE if family.plain_head)
