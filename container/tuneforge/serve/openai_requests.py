"""OpenAI chat and completions bodies -> Invocations (what their `to_requests` does).

Beyond text in and text out: completions take token-id prompts (`list[int]`,
`list[list[int]]`) and `echo` with `logprobs` scores the prompt's own tokens (what
lm-evaluation-harness reads for loglikelihood tasks, with `max_tokens` 0 or 1). A string prompt
is tokenized exactly as the model's tokenizer does it, with the tokenizer's own special tokens
and none added by the server (as vLLM and OpenAI do: the harness's string prompts count the
tokens on its side), and `text_offset` comes from the tokenizer's character spans; chat takes
`top_logprobs`, `response_format` and `tools` (structured.py). `suffix` (fill-in-the-middle),
`presence_penalty` and `frequency_penalty` are refused, never silently ignored.
"""

from __future__ import annotations

from .errors import invalid
from .invocation import Invocation
from .limits import openai_sampling
from .prompt_types import is_token
from .prompting import render_chat
from .structured import response_schema, tool_plan, tool_schema


def chat_requests(body, limits) -> Invocation:
    """A read ChatRequest within `limits` (a ServerLimits)."""
    if "messages" not in body.raw:
        raise invalid("`messages` is required: a list of {role, content} objects")
    tools = tool_plan(body)
    schema = tool_schema(tools) or response_schema(body.response_format)
    where = "tool_choice" if tool_schema(tools) else "response_format"
    guide = limits.guide(where, schema=schema) if schema else None
    text = render_chat(limits, body.messages, "messages", tools)
    if body.top_logprobs and not body.logprobs:
        raise invalid("`top_logprobs` needs `logprobs: true`")
    options = _options(body, limits.loaded, logprobs=bool(body.logprobs), top=body.top_logprobs or 0)
    options["tools"] = tools
    req = limits.request(limits.encode(text, "messages"), "messages", openai_sampling(body),
                         **_shared_options(body), stream=bool(body.stream), guide=guide,
                         top_logprobs=options["top_logprobs"])
    return Invocation("chat", _on_adapter(limits, body, [req], options), [text], req.stream, False, options)


def completion_requests(body, limits) -> Invocation:
    """A read CompletionRequest within `limits` (a ServerLimits)."""
    if "prompt" not in body.raw:
        raise invalid("`prompt` is required: a string, a list of strings, a list of token ids or a list "
                      "of token-id lists")
    special = True if body.add_special_tokens is None else body.add_special_tokens
    prompts, list_input = _prompts(limits, body.prompt, special)
    limits.check_count(prompts, "prompt")
    options = _options(body, limits.loaded, logprobs=body.logprobs, top=body.logprobs or 0)
    echo = options["echo"] = bool(body.echo)
    stream = bool(body.stream)
    if stream and len(prompts) > 1:
        raise invalid("`stream: true` takes a single prompt, not a list")
    scored = body.logprobs is not None and echo
    if scored:  # where each echoed prompt token starts in its text (None: cumulative token lengths)
        options["prompt_offsets"] = [_char_offsets(limits, text, special) if isinstance(source, str) else None
                                     for (_, text, _), source in zip(prompts, _sources(body.prompt))]
    if scored and limits.loaded.seq2seq:
        raise invalid("`echo` with `logprobs` scores the prompt, which needs a causal (decoder-only) model")
    if scored and stream:
        raise invalid("`echo` with `logprobs` is not available when streaming; send `stream: false`")
    sampling, shared = openai_sampling(body), _shared_options(body)
    requests = [limits.request(ids, where, sampling, **shared, stream=stream, min_new=0 if echo else 1,
                               top_logprobs=options["top_logprobs"],
                               prompt_logprobs=body.logprobs if scored else None)
                for ids, _, where in prompts]
    return Invocation("completion", _on_adapter(limits, body, requests, options), [text for _, text, _ in prompts],
                      stream, list_input, options)


def _prompts(limits, prompt, special: bool) -> tuple[list[tuple[list[int], str, str]], bool]:
    """(ids, text, where) per prompt, and whether the caller sent a list of prompts."""
    if isinstance(prompt, str):
        return [_text_prompt(limits, prompt, "prompt", special)], False
    if isinstance(prompt, list) and prompt and all(is_token(t) for t in prompt):
        return [_token_prompt(limits, prompt, "prompt")], True
    if isinstance(prompt, list):
        out = []
        for i, item in enumerate(prompt):
            where = f"prompt[{i}]"
            if isinstance(item, str):
                out.append(_text_prompt(limits, item, where, special))
            elif isinstance(item, list) and all(is_token(t) for t in item):
                out.append(_token_prompt(limits, item, where))
            else:
                raise invalid(f"`{where}` must be a string or a list of token ids (integers)")
        return out, True
    raise invalid("`prompt` must be a string, a list of strings, a list of token ids or a list of token-id lists")


def _on_adapter(limits, body, requests: list, options: dict) -> list:
    """`model` naming one of the folder's adapters runs the requests on it (and answers with its
    name); any other name gets the weights alone, as before adapters existed."""
    adapters = limits.loaded.info.adapters
    adapter = body.model if body.model in adapters else None
    for req in requests:
        req.adapter = adapter
    options["model"] = adapter or options["model"]
    return requests


def _sources(prompt) -> list:
    """The prompts as sent, one per entry of _prompts (a single token-id list is one prompt)."""
    if isinstance(prompt, str) or all(is_token(t) for t in prompt):
        return [prompt]
    return list(prompt)


def _text_prompt(limits, text: str, where: str, special: bool) -> tuple[list[int], str, str]:
    return prompt_ids(limits, text, where, special), text, where


def prompt_ids(limits, text: str, where: str, special: bool = True) -> list[int]:
    """The ids of a raw string prompt (/v1/completions, /tokenize)."""
    if limits.loaded.seq2seq and special:  # encoder input as in training: the text and EOS
        return limits.encode(text, where)
    return limits.tokenizer(text, add_special_tokens=special)["input_ids"] if text else []


def _char_offsets(limits, text: str, special: bool) -> list[int] | None:
    """Where each token of `text` starts; None where the tokenizer gives no spans (slow ones)."""
    try:
        spans = limits.tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, ValueError, TypeError):
        return None
    return [start for start, _ in spans]


def _token_prompt(limits, ids: list[int], where: str) -> tuple[list[int], str, str]:
    """Token ids are used as they are (no BOS added), as vLLM and OpenAI do."""
    size = max(len(limits.tokenizer), getattr(limits.loaded.model.config, "vocab_size", 0) or 0)
    bad = next((i for i, t in enumerate(ids) if not 0 <= t < size), None)
    if bad is not None:
        raise invalid(f"`{where}[{bad}]` is token id {ids[bad]}, outside this model's vocabulary (0 to {size - 1})")
    return list(ids), limits.tokenizer.decode(ids, skip_special_tokens=True), where


def _shared_options(body) -> dict:
    """The _request arguments every OpenAI prompt shares: token limit, stop sequences, choices."""
    return {"asked": body.max_new_tokens, "max_field": body.max_field, "stop": body.stop, "n": body.n or 1}


def _options(body, loaded, *, logprobs, top: int) -> dict:
    """Answer options. Chat: `logprobs` true/false and `top_logprobs` 0-20 alternatives;
    completions: `logprobs` 0-20 alternatives (None: no log-probabilities)."""
    usage = body.stream_options is not None and bool(body.stream_options.include_usage)
    return {"model": loaded.info.name, "logprobs": logprobs, "top_logprobs": top, "include_usage": usage}
