"""What a request must fit on this server: the model's token limits, the server's settings and its
prompt format. Each request body converts itself (`to_requests(limits)`) against one of these."""

from __future__ import annotations

import time

from ..data.prompt import encode_prompt
from .engine import GenerationRequest, Sampling
from .errors import invalid
from .fields import not_an_integer_in, show, stop_sequences


class ServerLimits:
    """The loaded model and the server's settings, asked by every body while it converts itself."""

    def __init__(self, loaded, settings):
        self.loaded, self.settings = loaded, settings
        self.tokenizer = loaded.tokenizer
        self.prompt_format = loaded.info.prompt
        most = settings.max_return_sequences
        self.field_bounds = {"n": most, "num_return_sequences": most}  # what bodies.py cannot declare

    def encode(self, text, where: str) -> list[int]:
        if not isinstance(text, str):
            raise invalid(f"`{where}` must be a string")
        return encode_prompt(self.tokenizer, text, seq2seq=self.loaded.seq2seq)

    def check_count(self, items, where: str) -> None:
        if not items:
            raise invalid(f"`{where}` is empty")
        if len(items) > self.settings.max_client_batch:
            raise invalid(f"`{where}` holds {len(items)} prompts; at most {self.settings.max_client_batch} "
                          "per request (TUNEFORGE_MAX_CLIENT_BATCH)")

    def request(self, ids: list[int], where: str, sampling: Sampling, *, asked: int | None = None, stop=None,
                prefix: str = "", n: int = 1, stream: bool = False, max_field: str = "max_new_tokens",
                min_new: int = 1, guide=None, **scoring) -> GenerationRequest:
        """One GenerationRequest within the server's limits: `asked` new tokens (a declared integer;
        None: the model's default). `min_new` 0 lets an echoed prompt be scored without generating;
        `guide` (a guided.Plan) must fit in max_new_tokens."""
        loaded, settings = self.loaded, self.settings
        if not ids:
            raise invalid(f"`{where}` is empty")
        if len(ids) > loaded.max_input_tokens:
            raise invalid(f"`{where}` must have at most {loaded.max_input_tokens} tokens, given {len(ids)} "
                          "(shorten the prompt or use parameters.truncate)")
        room = settings.max_new_tokens
        if loaded.max_total_tokens is not None:
            room = min(room, loaded.max_total_tokens - len(ids))
        if asked is not None and asked < min_new:
            raise not_an_integer_in(f"{prefix}{max_field}", min_new, None, asked)
        if asked is not None and asked > room:
            raise invalid(f"`{prefix}{max_field}` must be between {min_new} and {room} for this {len(ids)}-token "
                          f"prompt (the model holds {loaded.max_total_tokens or 'unbounded'} tokens, the server "
                          f"allows {settings.max_new_tokens} new ones), got {asked}")
        max_new = asked if asked is not None else min(loaded.default_max_new_tokens, room)
        if guide is not None and guide.fewest_tokens() > max_new:
            raise invalid(f"`{prefix}{max_field}` is {max_new}, but the shortest answer the requested format "
                          f"allows takes {guide.fewest_tokens()} tokens; raise it")
        stop = stop_sequences(stop, prefix, settings.max_stop_sequences, settings.max_stop_sequence_chars)
        deadline = None if stream else time.monotonic() + settings.request_deadline
        return GenerationRequest(ids, max_new, sampling, stop, n, stream, deadline, guide=guide, **scoring)

    def guide(self, where: str, *, schema: dict | None = None, regex: str | None = None):
        """A compiled constraint (guided.Plan) for a JSON schema or a regular expression."""
        from .guided import GuideError, compile_plan, regex_for_schema

        if not self.loaded.eos_token_ids:
            raise invalid(f"`{where}` needs a model with an end-of-sequence token; this one has none")
        try:
            pattern = regex if regex is not None else regex_for_schema(schema)
            return compile_plan(pattern, self.tokenizer, self.loaded.eos_token_ids[0])
        except GuideError as exc:
            raise invalid(f"`{where}`: {exc}") from None

    def adapter(self, adapter_id) -> str | None:
        """TGI's `parameters.adapter_id`: one of the model folder's adapters/ by name."""
        if adapter_id is None:
            return None
        adapters = self.loaded.info.adapters
        if adapter_id not in adapters:
            served = (f"its adapters are {', '.join(sorted(adapters))}" if adapters else
                      "it serves no adapters (they go in <model_dir>/adapters/<name>/)")
            raise invalid(f"`parameters.adapter_id` {show(adapter_id)} is not an adapter of this server; {served}")
        return adapter_id


def tgi_sampling(params) -> Sampling:
    """TGI's rule: sampling is on when asked for or when any warper is set."""
    warped = params.top_k is not None or params.top_p is not None or params.temperature not in (None, 1.0)
    return sampling(params, do_sample=bool(params.do_sample) or warped)


def openai_sampling(body) -> Sampling:
    """OpenAI's rule: temperature 0 is greedy, anything else (default 1) samples."""
    return sampling(body, do_sample=body.temperature != 0)


def sampling(params, *, do_sample: bool) -> Sampling:
    """From a body's declared (already checked) sampling fields; unset ones take their defaults."""
    temperature = params.temperature if params.temperature is not None else 1.0
    return Sampling(
        do_sample=do_sample and temperature > 0,
        temperature=temperature if temperature > 0 else 1.0,
        top_p=params.top_p if params.top_p is not None else 1.0,
        top_k=params.top_k or 0,
        repetition_penalty=params.repetition_penalty if params.repetition_penalty is not None else 1.0,
        no_repeat_ngram_size=params.no_repeat_ngram_size or 0,
        seed=params.seed,
    )
