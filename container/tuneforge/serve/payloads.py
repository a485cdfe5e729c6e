"""Request bodies -> GenerationRequests, for every format the server speaks.

Formats (docs/payloads.md has examples of each):
  tgi         {"inputs": str | [str] | {fields} , "parameters": {...}, "stream": bool}
  dialog      {"inputs": [[{role, content}, ...], ...], "parameters": {...}}  (JumpStart Llama-2)
  flan        {"text_inputs": str | [str], "max_length": .., "num_return_sequences": .., ...}
  chat        {"messages": [...], "max_tokens": .., ...}                     (OpenAI chat)
  completion  {"prompt": str | [str], "max_tokens": .., ...}                 (OpenAI completions)
  text        a bare prompt (text/plain, application/x-text)
Every prompt goes through the saved PromptFormat / chat template and prompt.encode_prompt,
the same path training used, so the model is asked the way it was taught: on an instruction or
table fine-tune, plain strings (except OpenAI `prompt`s) and a single chat turn are rendered
through its template (PromptFormat.render_text / render_messages).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

from ..prompt import encode_prompt, render_chat, template_fields
from .engine import GenerationRequest, Sampling

MAX_SEED = (1 << 64) - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
CHAT_ROLES = ("system", "user", "assistant")
# TGI parameters that clients send and this server does not implement: accepted when unset.
TGI_UNSUPPORTED = ("typical_p", "watermark", "top_n_tokens", "grammar", "adapter_id", "frequency_penalty")


class PayloadError(Exception):
    """A request the server cannot answer; status and error_type go into the JSON error body."""

    def __init__(self, status: int, message: str, error_type: str = "validation"):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type


def invalid(message: str) -> PayloadError:
    return PayloadError(422, message, "validation")


@dataclass
class Invocation:
    """One HTTP request: its format, one GenerationRequest per prompt, and answer options."""

    kind: str
    requests: list[GenerationRequest]
    prompt_texts: list[str]
    stream: bool = False
    list_input: bool = False  # the caller sent a list, so it gets a list back
    options: dict = field(default_factory=dict)


class Parser:
    """Knows the model's limits and prompt format; turns parsed JSON into an Invocation."""

    def __init__(self, loaded, settings):
        self.loaded, self.settings = loaded, settings
        self.tokenizer = loaded.tokenizer
        self.prompt_format = loaded.info.prompt

    # ------------------------------------------------------------------ dispatch
    def parse(self, body, route: str = "invocations") -> Invocation:
        if isinstance(body, str):
            return self.text(body)
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object (or a JSON string holding a prompt)")
        if route == "chat" or (route == "invocations" and "messages" in body):
            return self.chat(body)
        if route == "completion" or (route == "invocations" and "prompt" in body and "inputs" not in body):
            return self.completion(body)
        if route == "invocations" and "text_inputs" in body:
            return self.flan(body)
        if "inputs" in body:
            inputs = body["inputs"]
            if _is_dialog_list(inputs):
                return self.dialogs(body)
            return self.tgi(body, force_stream=route == "generate_stream")
        raise invalid("the request names no input: send `inputs` (TGI/JumpStart), `text_inputs` (Flan-T5), "
                      "`messages` (OpenAI chat) or `prompt` (OpenAI completions)")

    # ------------------------------------------------------------------ formats
    def text(self, prompt: str) -> Invocation:
        prompt = self.prompt_format.render_text(prompt)
        req = self._request(self._encode(prompt, "body"), "body", {}, self._tgi_sampling({}, ""))
        return Invocation("text", [req], [prompt])

    def tgi(self, body: dict, force_stream: bool = False) -> Invocation:
        params = _params(body)
        stream = force_stream or _bool(body, "stream", False, "")
        inputs, list_input = body["inputs"], isinstance(body["inputs"], list)
        items = inputs if list_input else [inputs]
        self._check_count(items, "inputs")
        if stream and list_input:
            raise invalid("`stream: true` takes a single input, not a list")
        for name in TGI_UNSUPPORTED:
            if params.get(name):
                raise invalid(f"`parameters.{name}` is not supported by this server; leave it unset")
        if (params.get("best_of") or 1) != 1:
            raise invalid("`parameters.best_of` must be 1 (best-of sampling is not supported)")
        sampling = self._tgi_sampling(params, "parameters.")
        requests, texts = [], []
        for i, item in enumerate(items):
            where = f"inputs[{i}]" if list_input else "inputs"
            text = self._render_input(item, where)
            ids = _truncate(self._encode(text, where), params, "parameters.")
            requests.append(self._request(ids, where, params, sampling, prefix="parameters.", stream=stream))
            texts.append(text)
        options = {"details": _bool(params, "details", False, "parameters."),
                   "decoder_input_details": _bool(params, "decoder_input_details", False, "parameters."),
                   "return_full_text": _bool(params, "return_full_text", False, "parameters.")}
        return Invocation("tgi", requests, texts, stream, list_input, options)

    def dialogs(self, body: dict) -> Invocation:
        params = _params(body)
        inputs = body["inputs"]
        dialogs = inputs if inputs and isinstance(inputs[0], list) else [inputs]
        self._check_count(dialogs, "inputs")
        if _bool(body, "stream", False, ""):
            raise invalid("streaming is not available for Llama-2 dialog lists; use `messages` (OpenAI chat)")
        sampling = self._tgi_sampling(params, "parameters.")
        requests, texts = [], []
        for i, dialog in enumerate(dialogs):
            where = f"inputs[{i}]"
            text = self._render_chat(dialog, where)
            requests.append(self._request(self._encode(text, where), where, params, sampling, prefix="parameters."))
            texts.append(text)
        return Invocation("dialog", requests, texts, False, True)

    def flan(self, body: dict) -> Invocation:
        inputs = body["text_inputs"]
        list_input = isinstance(inputs, list)
        items = inputs if list_input else [inputs]
        self._check_count(items, "text_inputs")
        if _int(body, "num_beams", 1, None, 1, "") != 1:
            raise invalid("`num_beams` must be 1 (beam search is not supported; use do_sample or greedy)")
        n = _int(body, "num_return_sequences", 1, self.settings.max_return_sequences, 1, "")
        do_sample = _bool(body, "do_sample", False, "")
        sampling = self._sampling(body, "", do_sample=do_sample, temperature_min=0.0)
        requests, texts = [], []
        for i, item in enumerate(items):
            where = f"text_inputs[{i}]" if list_input else "text_inputs"
            text = self._render_input(item, where)
            ids = self._encode(text, where)
            params = dict(body)
            if params.get("max_new_tokens") is None and params.get("max_length") is not None:
                # HF semantics: max_length counts the prompt (causal) or the decoder start token.
                length = _int(body, "max_length", 1, 1 << 20, None, "")
                params["max_new_tokens"] = length - (1 if self.loaded.seq2seq else len(ids))
                if params["max_new_tokens"] < 1:
                    raise invalid(f"`max_length` ({length}) leaves no room to generate after the "
                                  f"{len(ids)}-token prompt; raise it or use max_new_tokens")
            requests.append(self._request(ids, where, params, sampling, n=n))
            texts.append(text)
        return Invocation("flan", requests, texts, False, list_input)

    def chat(self, body: dict) -> Invocation:
        if "messages" not in body:
            raise invalid("`messages` is required: a list of {role, content} objects")
        self._openai_unsupported(body)
        text = self._render_chat(body["messages"], "messages")
        params = _openai_params(body)
        n = _int(body, "n", 1, self.settings.max_return_sequences, 1, "")
        stream = _bool(body, "stream", False, "")
        req = self._request(self._encode(text, "messages"), "messages", params, self._openai_sampling(body),
                            n=n, stream=stream, max_field=_openai_max_field(body))
        return Invocation("chat", [req], [text], stream, False, _openai_options(body, self.loaded, chat=True))

    def completion(self, body: dict) -> Invocation:
        if "prompt" not in body:
            raise invalid("`prompt` is required: a string or a list of strings")
        self._openai_unsupported(body)
        prompts = body["prompt"]
        list_input = isinstance(prompts, list)
        items = prompts if list_input else [prompts]
        self._check_count(items, "prompt")
        params = _openai_params(body)
        n = _int(body, "n", 1, self.settings.max_return_sequences, 1, "")
        stream = _bool(body, "stream", False, "")
        if stream and len(items) > 1:
            raise invalid("`stream: true` takes a single prompt, not a list")
        sampling = self._openai_sampling(body)
        requests, texts = [], []
        for i, item in enumerate(items):
            where = f"prompt[{i}]" if list_input else "prompt"
            if not isinstance(item, str):
                raise invalid(f"`{where}` must be a string")
            requests.append(self._request(self._encode(item, where), where, params, sampling, n=n, stream=stream,
                                          max_field=_openai_max_field(body)))
            texts.append(item)
        options = _openai_options(body, self.loaded, chat=False)
        options["echo"] = _bool(body, "echo", False, "")
        return Invocation("completion", requests, texts, stream, list_input, options)

    # ------------------------------------------------------------------ prompts
    def _render_input(self, item, where: str) -> str:
        if isinstance(item, str):  # a question, or a prompt the client already wrote whole
            return self.prompt_format.render_text(item)
        if isinstance(item, dict):
            return self._render_fields(item, where)
        raise invalid(f"`{where}` must be a string or an object of prompt fields")

    def _render_fields(self, row: dict, where: str) -> str:
        """Structured input ({"instruction": .., "context": ..}) through the saved template."""
        fmt = self.prompt_format
        names = template_fields(fmt.prompt_template)
        if fmt.kind == "chat" or not names:
            raise invalid(f"`{where}` is an object, but this model takes "
                          + ("chat messages" if fmt.kind == "chat" else "plain text prompts"))
        unknown = [k for k in row if k not in names]
        if unknown:
            raise invalid(f"`{where}` has unknown field(s) {unknown}; this model's prompt template "
                          f"takes {names}")
        if not any(k in row for k in names):
            raise invalid(f"`{where}` has none of the prompt fields {names}")
        for key, value in row.items():
            if value is not None and not isinstance(value, (str, int, float)):
                raise invalid(f"`{where}.{key}` must be a string")
        return fmt.render_prompt({k: row.get(k) for k in names})

    def _render_chat(self, messages, where: str) -> str:
        if not isinstance(messages, list) or not messages:
            raise invalid(f"`{where}` must be a non-empty list of {{role, content}} messages")
        clean = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise invalid(f"`{where}[{i}]` must be an object with `role` and `content`")
            role = message["role"]
            if role not in CHAT_ROLES:
                raise invalid(f"`{where}[{i}].role` must be one of {list(CHAT_ROLES)}, got {role!r}")
            clean.append({"role": role, "content": _content(message.get("content"), f"{where}[{i}].content")})
        if self.prompt_format.takes_fields:  # an instruction fine-tune: its template, not a chat one
            try:
                return self.prompt_format.render_messages(clean)
            except ValueError as exc:
                raise invalid(f"`{where}` does not fit this model: {exc}. Send the conversation as one user "
                              "message, or the prompt fields as `inputs`") from None
        try:
            return render_chat(self.tokenizer, clean, add_generation_prompt=True,
                               chat_template=self.prompt_format.chat_template)
        except Exception as exc:  # a template's raise_exception (e.g. roles must alternate)
            raise invalid(f"`{where}` does not fit the model's chat template: {exc}") from None

    def _encode(self, text, where: str) -> list[int]:
        if not isinstance(text, str):
            raise invalid(f"`{where}` must be a string")
        return encode_prompt(self.tokenizer, text, seq2seq=self.loaded.seq2seq)

    def _check_count(self, items, where: str) -> None:
        if not items:
            raise invalid(f"`{where}` is empty")
        if len(items) > self.settings.max_client_batch:
            raise invalid(f"`{where}` holds {len(items)} prompts; at most {self.settings.max_client_batch} "
                          "per request (TUNEFORGE_MAX_CLIENT_BATCH)")

    # ------------------------------------------------------------------ limits
    def _request(self, ids: list[int], where: str, params: dict, sampling: Sampling, *, prefix: str = "",
                 n: int = 1, stream: bool = False, max_field: str = "max_new_tokens") -> GenerationRequest:
        loaded, settings = self.loaded, self.settings
        if not ids:
            raise invalid(f"`{where}` is empty")
        if len(ids) > loaded.max_input_tokens:
            raise invalid(f"`{where}` must have at most {loaded.max_input_tokens} tokens, given {len(ids)} "
                          "(shorten the prompt or use parameters.truncate)")
        room = settings.max_new_tokens
        if loaded.max_total_tokens is not None:
            room = min(room, loaded.max_total_tokens - len(ids))
        asked = _int({max_field: params.get("max_new_tokens")}, max_field, 1, None, None, prefix)
        if asked is not None and asked > room:
            raise invalid(f"`{prefix}{max_field}` must be between 1 and {room} for this {len(ids)}-token "
                          f"prompt (the model holds {loaded.max_total_tokens or 'unbounded'} tokens, the server "
                          f"allows {settings.max_new_tokens} new ones), got {asked}")
        max_new = asked if asked is not None else min(loaded.default_max_new_tokens, room)
        stop = _stop(params, prefix, settings.max_stop_sequences, settings.max_stop_sequence_chars)
        deadline = None if stream else time.monotonic() + settings.request_deadline
        return GenerationRequest(ids, max_new, sampling, stop, n, stream, deadline)

    def _tgi_sampling(self, params: dict, prefix: str) -> Sampling:
        """TGI's rule: sampling is on when asked for or when any warper is set."""
        warped = any(params.get(k) is not None for k in ("top_k", "top_p")) or \
            params.get("temperature") not in (None, 1, 1.0)
        return self._sampling(params, prefix, do_sample=_bool(params, "do_sample", False, prefix) or warped,
                              temperature_min=0.0)

    def _openai_sampling(self, body: dict) -> Sampling:
        """OpenAI's rule: temperature 0 is greedy, anything else (default 1) samples."""
        temperature = _float(body, "temperature", 0.0, 2.0, 1.0, "", open_low=False)
        return self._sampling(body, "", do_sample=temperature > 0, temperature_min=-1.0)

    def _sampling(self, params: dict, prefix: str, *, do_sample: bool, temperature_min: float) -> Sampling:
        temperature = _float(params, "temperature", max(temperature_min, 0.0), 100.0, 1.0, prefix,
                             open_low=temperature_min >= 0)
        return Sampling(
            do_sample=do_sample and temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            top_p=_float(params, "top_p", 0.0, 1.0, 1.0, prefix, open_low=True),
            top_k=_int(params, "top_k", 0, 1 << 20, 0, prefix),
            repetition_penalty=_float(params, "repetition_penalty", 0.0, 100.0, 1.0, prefix, open_low=True),
            no_repeat_ngram_size=_int(params, "no_repeat_ngram_size", 0, 1 << 10, 0, prefix),
            seed=_int(params, "seed", 0, MAX_SEED, None, prefix),
        )

    def _openai_unsupported(self, body: dict) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if body.get(name):
                raise invalid(f"`{name}` is not supported by this server; use repetition_penalty")
        for name in ("tools", "functions", "top_logprobs"):
            if body.get(name):
                raise invalid(f"`{name}` is not supported by this server")
        fmt = body.get("response_format")
        if fmt and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
            raise invalid("`response_format` must be {\"type\": \"text\"}; structured output is not supported")


# ---------------------------------------------------------------------- field helpers
def _is_dialog_list(inputs) -> bool:
    """[[{role, content}]] (several dialogs) or [{role, content}] (one)."""
    if not isinstance(inputs, list) or not inputs:
        return False
    first = inputs[0]
    if isinstance(first, list):
        return True
    return isinstance(first, dict) and "role" in first and "content" in first


def _params(body: dict) -> dict:
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise invalid("`parameters` must be an object")
    if "stop_sequences" in params and params.get("stop") is None:  # LMI's name for it
        params = dict(params, stop=params["stop_sequences"])
    return params


def _openai_params(body: dict) -> dict:
    params = dict(body)
    tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    params["max_new_tokens"] = tokens
    return params


def _openai_max_field(body: dict) -> str:
    return "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"


def _openai_options(body: dict, loaded, *, chat: bool) -> dict:
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise invalid("`stream_options` must be an object")
    # chat: logprobs is a bool; legacy completions: an int (how many alternatives, 0 here).
    logprobs = _bool(body, "logprobs", False, "") if chat else _int(body, "logprobs", 0, 0, None, "") is not None
    return {"model": loaded.info.name, "logprobs": logprobs,
            "include_usage": _bool(stream_options, "include_usage", False, "stream_options.")}


def _content(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        parts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(f"`{where}[{i}]` must be {{\"type\": \"text\", \"text\": ...}}; "
                              "only text content is supported")
            parts.append(part["text"])
        return "".join(parts)
    raise invalid(f"`{where}` must be a string")


def _truncate(ids: list[int], params: dict, prefix: str) -> list[int]:
    keep = _int(params, "truncate", 1, None, None, prefix)
    return ids[-keep:] if keep is not None and len(ids) > keep else ids


def _bool(params: dict, name: str, default: bool, prefix: str) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"`{prefix}{name}` must be true or false, got {_show(value)}")
    return value


def _int(params: dict, name: str, low: int, high: int | None, default, prefix: str):
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    span = f"between {low} and {high}" if high is not None else f"at least {low}"
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise invalid(f"`{prefix}{name}` must be an integer {span}, got {_show(value)}")
    return value


def _float(params: dict, name: str, low: float, high: float, default: float, prefix: str, *,
           open_low: bool) -> float:
    value = params.get(name)
    if value is None:
        return default
    bracket = "(" if open_low else "["
    span = f"{bracket}{low:g}, {high:g}]"
    if isinstance(value, float) and not math.isfinite(value):  # json reads NaN, Infinity, -Infinity
        raise invalid(f"`{prefix}{name}` must be a finite number in {span}, got {value!r}")
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if not bad:
        bad = value < low or (open_low and value == low) or value > high
    if bad:
        raise invalid(f"`{prefix}{name}` must be a number in {span}, got {_show(value)}")
    return float(value)


def _stop(params: dict, prefix: str, most: int, longest: int) -> tuple[str, ...]:
    """A string or a list of non-empty strings; an empty list means no stop sequence."""
    value = params.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise invalid(f"`{prefix}stop` must be a non-empty string or a list of non-empty strings")
    if len(items) > most:
        raise invalid(f"`{prefix}stop` holds {len(items)} sequences; at most {most} are allowed "
                      "(TUNEFORGE_MAX_STOP_SEQUENCES)")
    for i, item in enumerate(items):
        if len(item) > longest:
            where = f"{prefix}stop" if isinstance(value, str) else f"{prefix}stop[{i}]"
            raise invalid(f"`{where}` is {len(item)} characters long; a stop sequence may have at most "
                          f"{longest} (TUNEFORGE_MAX_STOP_SEQUENCE_CHARS)")
    return tuple(items)


def _show(value, most: int = 60) -> str:
    """repr for an error message, cut short: a 6 MB value must not come back in the answer."""
    try:
        text = repr(value)
    except RecursionError:  # a deeply nested list or object
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= most else text[:most] + f"... ({len(text)} characters)"


def lone_surrogate(document) -> str | None:
    """Where a parsed JSON document holds a lone UTF-16 surrogate (`"\\ud800"`), e.g.
    `messages[0].content`; None when it holds none. Python's json accepts them, but they are not
    text: tokenizers and the UTF-8 answer would fail on them. Iterative, for any depth."""
    stack = [(document, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return where or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{key}" if where else str(key)
                if _SURROGATE.search(key):
                    return path
                stack.append((item, path))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
    return None
