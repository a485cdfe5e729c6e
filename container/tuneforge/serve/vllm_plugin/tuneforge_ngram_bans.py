"""Which tokens no_repeat_ngram_size bans (plain Python: vLLM's processor and the tests import it)."""

from __future__ import annotations


def banned_tokens(ids: list[int], size: int) -> set[int]:
    """Tokens that would complete an n-gram of `size` already present in `ids`."""
    if size <= 0 or len(ids) + 1 < size:
        return set()
    if size == 1:
        return set(ids)
    tail = tuple(ids[len(ids) - size + 1:])
    return {ids[i + size - 1] for i in range(len(ids) - size + 1) if tuple(ids[i:i + size - 1]) == tail}
