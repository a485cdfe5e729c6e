"""OpenAI chat and completions bodies -> Invocations (the Parser's `chat` and `completion`).

Beyond text in and text out: completions take token-id prompts (`list[int]`,
`list[list[int]]`) and `echo` with `logprobs` scores the prompt's own tokens (what
lm-evaluation-harness reads for loglikelihood tasks, with `max_tokens` 0 or 1); chat takes
`top_logprobs`, `response_format` and `tools` (structured.py). `suffix` (fill-in-the-middle),
`presence_penalty` and `frequency_penalty` are refused, never silently ignored.
"""

from __future__ import annotations

from .errors import invalid
from .fields import read_bool, read_int
from .invocation import Invocation
from .structured import response_schema, tool_plan, tool_schema

MAX_TOP_LOGPROBS = 20  # as OpenAI's chat API and vLLM


def parse_chat(parser, body: dict) -> Invocation:
    if "messages" not in body:
        raise invalid("`messages` is required: a list of {role, content} objects")
    _unsupported(body)
    tools = tool_plan(body)
    schema = tool_schema(tools) or response_schema(body)
    where = "tool_choice" if tool_schema(tools) else "response_format"
    guide = parser.guide(where, schema=schema) if schema else None
    text = parser._render_chat(body["messages"], "messages", tools)
    options = _options(body, parser.loaded, chat=True)
    options["tools"] = tools
    req = parser._request(parser._encode(text, "messages"), "messages", _params(body), parser._openai_sampling(body),
                          n=read_int(body, "n", 1, parser.settings.max_return_sequences, 1, ""),
                          stream=read_bool(body, "stream", False, ""), max_field=_max_field(body),
                          guide=guide, top_logprobs=options["top_logprobs"])
    return Invocation("chat", [req], [text], req.stream, False, options)


def parse_completion(parser, body: dict) -> Invocation:
    if "prompt" not in body:
        raise invalid("`prompt` is required: a string, a list of strings, a list of token ids or a list "
                      "of token-id lists")
    _unsupported(body)
    if body.get("suffix"):
        raise invalid("`suffix` is not supported: fill-in-the-middle needs a model trained for it; leave "
                      "`suffix` unset and send the text before the gap as `prompt`")
    prompts, list_input = _prompts(parser, body["prompt"])
    parser._check_count(prompts, "prompt")
    options = _options(body, parser.loaded, chat=False)
    echo = options["echo"] = read_bool(body, "echo", False, "")
    stream = read_bool(body, "stream", False, "")
    if stream and len(prompts) > 1:
        raise invalid("`stream: true` takes a single prompt, not a list")
    scored = options["logprobs"] is not None and echo
    if scored and parser.loaded.seq2seq:
        raise invalid("`echo` with `logprobs` scores the prompt, which needs a causal (decoder-only) model")
    if scored and stream:
        raise invalid("`echo` with `logprobs` is not available when streaming; send `stream: false`")
    sampling, n = parser._openai_sampling(body), read_int(body, "n", 1, parser.settings.max_return_sequences, 1, "")
    requests = [parser._request(ids, where, _params(body), sampling, n=n, stream=stream, max_field=_max_field(body),
                                min_new=0 if echo else 1, top_logprobs=options["top_logprobs"],
                                prompt_logprobs=options["logprobs"] if scored else None)
                for ids, _, where in prompts]
    return Invocation("completion", requests, [text for _, text, _ in prompts], stream, list_input, options)


def _prompts(parser, prompt) -> tuple[list[tuple[list[int], str, str]], bool]:
    """(ids, text, where) per prompt, and whether the caller sent a list of prompts."""
    if isinstance(prompt, str):
        return [(parser._encode(prompt, "prompt"), prompt, "prompt")], False
    if isinstance(prompt, list) and prompt and all(_is_token(t) for t in prompt):
        return [_token_prompt(parser, prompt, "prompt")], True
    if isinstance(prompt, list):
        out = []
        for i, item in enumerate(prompt):
            where = f"prompt[{i}]"
            if isinstance(item, str):
                out.append((parser._encode(item, where), item, where))
            elif isinstance(item, list) and all(_is_token(t) for t in item):
                out.append(_token_prompt(parser, item, where))
            else:
                raise invalid(f"`{where}` must be a string or a list of token ids (integers)")
        return out, True
    raise invalid("`prompt` must be a string, a list of strings, a list of token ids or a list of token-id lists")


def _is_token(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_prompt(parser, ids: list[int], where: str) -> tuple[list[int], str, str]:
    """Token ids are used as they are (no BOS added), as vLLM and OpenAI do."""
    size = max(len(parser.tokenizer), getattr(parser.loaded.model.config, "vocab_size", 0) or 0)
    bad = next((i for i, t in enumerate(ids) if not 0 <= t < size), None)
    if bad is not None:
        raise invalid(f"`{where}[{bad}]` is token id {ids[bad]}, outside this model's vocabulary (0 to {size - 1})")
    return list(ids), parser.tokenizer.decode(ids, skip_special_tokens=True), where


def _unsupported(body: dict) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name):
            raise invalid(f"`{name}` is not supported by this server; use repetition_penalty")
    if (read_int(body, "best_of", 1, None, 1, "")) != 1:
        raise invalid("`best_of` must be 1 (best-of sampling is not supported)")


def _params(body: dict) -> dict:
    return dict(body, max_new_tokens=body.get("max_completion_tokens", body.get("max_tokens")))


def _max_field(body: dict) -> str:
    return "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"


def _options(body: dict, loaded, *, chat: bool) -> dict:
    """Answer options. Chat: `logprobs` true/false and `top_logprobs` 0-20 alternatives;
    completions: `logprobs` 0-20 alternatives (None: no log-probabilities)."""
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise invalid("`stream_options` must be an object")
    if chat:
        logprobs = read_bool(body, "logprobs", False, "")
        top = read_int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, 0, "")
        if top and not logprobs:
            raise invalid("`top_logprobs` needs `logprobs: true`")
    else:
        logprobs = read_int(body, "logprobs", 0, MAX_TOP_LOGPROBS, None, "")
        top = logprobs or 0
    return {"model": loaded.info.name, "logprobs": logprobs, "top_logprobs": top,
            "include_usage": read_bool(stream_options, "include_usage", False, "stream_options.")}
