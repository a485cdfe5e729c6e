"""Constrained decoding: output that must match a JSON schema or a regular expression.

outlines-core compiles a regular expression (a JSON schema becomes one first) against the
model's vocabulary into an Index: which tokens each state allows and where they lead. Each
generated sequence walks its own Guide over that Index; GuidedLogits masks every token its
Guide does not allow, before sampling and before log-probabilities are recorded.

The token budget is part of the constraint: `Plan.distance[state]` is the fewest tokens
(end-of-sequence included) that complete the text from `state`. Once a sequence's remaining
budget gets that tight, only tokens that still finish in time are allowed, so the answer is
always complete (parseable JSON) within max_tokens, even from a model that would ramble.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

from ..byte_level import bytes_to_unicode

WHITESPACE = r"[ ]?"  # at most one space between JSON tokens: no budget spent on layout
CACHE_SIZE = 32
# Counted repetitions unroll into automaton states, and compiling against a vocabulary costs about
# states x tokens of time and memory: (a{1000}){1000} took gigabytes and minutes. Patterns that
# unroll past this many positions are refused before compiling.
MAX_POSITIONS = 10_000
_vocabularies: dict[int, object] = {}
_plans: OrderedDict[tuple, "Plan"] = OrderedDict()
_lock = threading.Lock()


class GuideError(ValueError):
    """A schema or pattern that cannot be compiled; the message says why."""


@dataclass(frozen=True)
class Plan:
    """A compiled constraint, shared by every request that asks for the same one."""

    index: object
    eos_id: int
    distance: dict  # state -> fewest tokens to finish (EOS included)
    transitions: dict  # state -> {token id: next state}
    longest: int  # the largest finite distance: below this budget, filtering starts to matter
    regex: str = ""  # what was compiled (the vLLM engine hands it to vLLM's own guided decoding)

    def fewest_tokens(self) -> int:
        return self.distance.get(self.index.get_initial_state(), 0)


def regex_for_schema(schema: dict) -> str:
    from outlines_core.json_schema import build_regex_from_schema

    try:
        return build_regex_from_schema(json.dumps(schema), WHITESPACE)
    except Exception as exc:  # noqa: BLE001 - the library's errors are plain messages
        raise GuideError(f"the JSON schema cannot be used for constrained decoding: {exc}") from None


def compile_plan(regex: str, tokenizer, eos_id: int) -> Plan:
    """The Plan for `regex`, compiled once per worker (an LRU of CACHE_SIZE)."""
    key = (id(tokenizer), eos_id, regex)
    with _lock:
        if key in _plans:
            _plans.move_to_end(key)
            return _plans[key]
    from outlines_core import Index

    size = unrolled_size(regex)
    if size is not None and size > MAX_POSITIONS:
        raise GuideError(f"the pattern is too complex for constrained decoding: its repetitions unroll to about "
                         f"{size:,} positions, at most {MAX_POSITIONS:,} are allowed (use smaller counts, "
                         "maxLength or maxItems)")
    try:
        index = Index(regex, _vocabulary(tokenizer, eos_id))
    except Exception as exc:  # noqa: BLE001
        raise GuideError(f"the pattern cannot be used for constrained decoding: {exc}") from None
    transitions = index.get_transitions()
    distance = _distances(transitions, set(index.get_final_states()), eos_id)
    plan = Plan(index, eos_id, distance, transitions, max(distance.values(), default=0), regex)
    with _lock:
        _plans[key] = plan
        while len(_plans) > CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


def unrolled_size(regex: str) -> int | None:
    """Character positions `regex` has once counted repetitions are unrolled (x{3} is 3, an open
    x* counts once); None where Python's parser does not read the pattern (then it is not
    bounded here)."""
    from re import _constants as c, _parser

    try:
        parsed = _parser.parse(regex)
    except Exception:  # noqa: BLE001 - a dialect Python does not read, or not a pattern at all
        return None

    def size(items) -> int:
        total = 0
        for op, arg in items:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                low, high, sub = arg
                total += size(sub) * (max(low, 1) if high == c.MAXREPEAT else high)
            elif op is c.SUBPATTERN:
                total += size(arg[-1])
            elif op is c.BRANCH:
                total += sum(size(alt) for alt in arg[1])
            elif op in (c.ASSERT, c.ASSERT_NOT):
                total += size(arg[1])
            elif op is not c.AT:
                total += 1
        return total

    return size(parsed)


def _distances(transitions: dict, finals: set, eos_id: int) -> dict:
    """Breadth-first search backwards from the final states (one token, EOS, to end there)."""
    reverse: dict = {}
    for state, moves in transitions.items():
        for token, target in moves.items():
            if token != eos_id:
                reverse.setdefault(target, set()).add(state)
    distance = {state: 1 for state in finals}
    todo = deque(finals)
    while todo:
        state = todo.popleft()
        for before in reverse.get(state, ()):
            if before not in distance:
                distance[before] = distance[state] + 1
                todo.append(before)
    return distance


def _vocabulary(tokenizer, eos_id: int):
    """outlines-core's Vocabulary built from the local tokenizer: token id -> the bytes it adds."""
    from outlines_core import Vocabulary

    key = id(tokenizer) * 31 + eos_id
    if key not in _vocabularies:
        special = set(tokenizer.all_special_ids)
        to_bytes = _token_bytes_function(tokenizer)
        table: dict[bytes, list[int]] = {}
        for token, token_id in tokenizer.get_vocab().items():
            if token_id not in special:
                table.setdefault(to_bytes(token), []).append(token_id)
        _vocabularies[key] = Vocabulary(eos_id, table)
    return _vocabularies[key]


def _token_bytes_function(tokenizer):
    """Byte-level BPE (GPT-2, Llama 3) spells bytes as printable characters; SentencePiece
    writes a space as U+2581 and raw bytes as <0xAB>."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = repr(getattr(backend, "decoder", "")) if backend is not None else ""
    if "ByteLevel" in decoder:
        table = {char: byte for byte, char in bytes_to_unicode().items()}
        return lambda token: bytes(table[c] for c in token) if all(c in table for c in token) else token.encode()

    def sentencepiece(token: str) -> bytes:
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            return bytes([int(token[3:5], 16)])
        return token.replace("\u2581", " ").encode()

    return sentencepiece




class GuidedLogits:
    """A transformers logits processor: each guided row keeps only the tokens its Guide allows
    (and, near the end of its budget, only those that still finish in time)."""

    def __init__(self, rows):
        self.rows = rows

    def __call__(self, input_ids, scores):
        import torch

        for number, row in enumerate(self.rows):
            if row.guide is None or row.finished:
                continue
            allowed = self._allowed(row)
            keep = torch.full_like(scores[number], float("-inf"))
            index = torch.tensor(allowed, dtype=torch.long, device=scores.device)
            keep[index] = 0.0
            scores[number] = scores[number] + keep
        return scores

    @staticmethod
    def _allowed(row) -> list[int]:
        plan, guide = row.plan, row.guide
        allowed = guide.get_tokens()
        left = row.max_new_tokens - len(row.ids)
        if left - 1 < plan.longest:
            moves = plan.transitions.get(guide.get_state(), {})
            far = plan.longest + 1
            fits = [t for t in allowed if t == plan.eos_id or plan.distance.get(moves.get(t), far) <= left - 1]
            allowed = fits or allowed
        return allowed
