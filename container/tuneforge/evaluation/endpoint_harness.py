"""lm-evaluation-harness task YAMLs against a served model: an lm-eval `LM` whose requests go to a
tuneforge server, tokenized by its /tokenize as HFLM tokenizes them (no special tokens added), so
the scores equal the model folder's (harness.py). Log-likelihoods come from /v1/completions with
`echo` (each prompt token's log-probability and the most likely one, for lm-eval's is_greedy);
generate_until is a greedy /v1/completions call on the context's token ids, cut at `until`."""

from __future__ import annotations

from lm_eval.api.model import LM

from ..errors import DataError
from .scoring import split_pair

MAX_GEN_TOKS = 256  # lm-eval's default for generate_until


class EndpointLM(LM):
    def __init__(self, endpoint, where: str):
        super().__init__()
        self.endpoint, self.where = endpoint, where

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return [self._loglikelihood(*request.args) for request in requests]

    def loglikelihood_rolling(self, requests):
        raise DataError("loglikelihood_rolling tasks (perplexity over whole documents) are not scored against an "
                        "endpoint", where=self.where, fix="score this task on the model folder")

    def generate_until(self, requests) -> list[str]:
        return [self._generate(*request.args) for request in requests]

    def _tokens(self, text: str) -> list[int]:
        return self.endpoint.post("/tokenize", {"prompt": text, "add_special_tokens": False}, self.where)["tokens"]

    def _loglikelihood(self, context: str, continuation: str) -> tuple[float, bool]:
        context, continuation = split_pair(context, continuation)
        context_ids = self._tokens(context)
        target = self._tokens(context + continuation)[len(context_ids):]
        body = {"prompt": context_ids + target, "echo": True, "logprobs": 1, "max_tokens": 0, "temperature": 0}
        logprobs = self.endpoint.post("/v1/completions", body, self.where)["choices"][0]["logprobs"]
        span = slice(len(context_ids), len(context_ids) + len(target))
        values, tops = logprobs["token_logprobs"][span], logprobs["top_logprobs"][span]
        greedy = all(value >= max(top.values()) - 1e-6 for value, top in zip(values, tops))
        return float(sum(values)), greedy

    def _generate(self, context: str, kwargs: dict) -> str:
        until = kwargs.get("until") or []
        body = {"prompt": self._tokens(context), "max_tokens": int(kwargs.get("max_gen_toks", MAX_GEN_TOKS)),
                "temperature": 0, "stop": [until] if isinstance(until, str) else list(until)}
        return self.endpoint.post("/v1/completions", body, self.where)["choices"][0]["text"]
