"""`no_repeat_ngram_size` as a vLLM logits processor, with transformers' meaning.

A request that sends `vllm_xargs: {"no_repeat_ngram_size": n}` never generates a token that would
repeat an n-gram already in its prompt + output (transformers' NoRepeatNGramLogitsProcessor sees
the same ids). Loaded by the engine with `--logits-processors tuneforge_vllm_ngram:NoRepeatNGram`;
standalone: only vLLM, torch and its sibling module are imported.
"""

from __future__ import annotations

import torch
from tuneforge_ngram_bans import banned_tokens
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

ARGUMENT = "no_repeat_ngram_size"


class NoRepeatNGram(AdapterLogitsProcessor):
    """Per request: -inf on the tokens banned_tokens() names."""

    @classmethod
    def validate_params(cls, params) -> None:
        size = (params.extra_args or {}).get(ARGUMENT)
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise ValueError(f"{ARGUMENT} must be a non-negative integer, got {size!r}")

    def is_argmax_invariant(self) -> bool:
        return False  # it removes tokens, the most likely one included

    def new_req_logits_processor(self, params):
        size = (params.extra_args or {}).get(ARGUMENT) or 0
        if not size:
            return None

        def ban(prompt_ids: list[int], output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            banned = banned_tokens(list(prompt_ids) + list(output_ids), size)
            if banned:
                logits[list(banned)] = float("-inf")
            return logits

        return ban
