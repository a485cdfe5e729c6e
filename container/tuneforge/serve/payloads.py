"""Request bodies -> GenerationRequests, for every format the server speaks.

Formats (docs/payloads.md has examples of each):
  tgi         {"inputs": str | [str] | {fields} , "parameters": {...}, "stream": bool}
  dialog      {"inputs": [[{role, content}, ...], ...], "parameters": {...}}  (JumpStart Llama-2)
  flan        {"text_inputs": str | [str], "max_length": .., "num_return_sequences": .., ...}
  chat        {"messages": [...], "max_tokens": .., ...}      (OpenAI chat; openai_requests.py)
  completion  {"prompt": str | [str] | [ids] | [[ids]], ...}   (OpenAI completions; openai_requests.py)
  text        a bare prompt (text/plain)
Each JSON format is first read into its model (bodies.py), which reports fields it does not take.
Every prompt goes through the saved PromptFormat / chat template and prompt.encode_prompt,
the same path training used, so the model is asked the way it was taught: on an instruction or
table fine-tune, plain strings (except OpenAI `prompt`s) and a single chat turn are rendered
through its template (PromptFormat.render_text / render_messages).
"""

from __future__ import annotations

import json
import time

from ..prompt import RENDER_SECONDS, TemplateTooSlow, apply_template, chat_template_for, encode_prompt, template_fields
from .bodies import (ChatRequest, CompletionRequest, DialogRequest, FlanRequest, SamplingParameters, TGIParameters,
                     TGIRequest)
from .engine import GenerationRequest, Sampling
from .errors import PayloadError, invalid
from .fields import not_an_integer_in, show, stop_sequences, text_content
from .invocation import Invocation
from .openai_requests import parse_chat, parse_completion

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
# TGI parameters that clients send and this server does not implement: accepted when unset.
TGI_UNSUPPORTED = ("typical_p", "watermark", "top_n_tokens", "frequency_penalty")


class Parser:
    """Knows the model's limits and prompt format; turns parsed JSON into an Invocation."""

    def __init__(self, loaded, settings):
        self.loaded, self.settings = loaded, settings
        self.tokenizer = loaded.tokenizer
        self.prompt_format = loaded.info.prompt
        most = settings.max_return_sequences
        self.limits = {"n": most, "num_return_sequences": most}  # what bodies.py cannot declare

    # ------------------------------------------------------------------ dispatch
    def parse(self, body, route: str = "invocations") -> Invocation:
        if isinstance(body, str):
            return self.text(body)
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object (or a JSON string holding a prompt)")
        if route == "responses":  # OpenAI's Responses API: the chat request it means (responses_api.py)
            from .responses_api import chat_body

            inv = ChatRequest.read(chat_body(body), limits=self.limits).invocation(self)
            inv.kind = "responses"  # answered in the Responses shape
            return inv
        if route == "chat" or (route == "invocations" and "messages" in body):
            return ChatRequest.read(body, limits=self.limits).invocation(self)
        if route == "completion" or (route == "invocations" and "prompt" in body and "inputs" not in body):
            return CompletionRequest.read(body, limits=self.limits).invocation(self)
        if route == "invocations" and "text_inputs" in body:
            return FlanRequest.read(body, limits=self.limits).invocation(self)
        if "inputs" in body:
            if _is_dialog_list(body["inputs"]):
                return DialogRequest.read(body).invocation(self)
            return TGIRequest.read(body).invocation(self, force_stream=route == "generate_stream")
        raise invalid("the request names no input: send `inputs` (TGI/JumpStart), `text_inputs` (Flan-T5), "
                      "`messages` (OpenAI chat) or `prompt` (OpenAI completions)")

    # ------------------------------------------------------------------ formats
    def text(self, prompt: str) -> Invocation:
        prompt = self.prompt_format.render_text(prompt)
        req = self._request(self._encode(prompt, "body"), "body", self._tgi_sampling(SamplingParameters()))
        return Invocation("text", [req], [prompt])

    def tgi(self, body: TGIRequest, force_stream: bool = False) -> Invocation:
        params = body.parameters or TGIParameters()
        stream = force_stream or bool(body.stream)
        inputs, list_input = body.inputs, isinstance(body.inputs, list)
        items = inputs if list_input else [inputs]
        self._check_count(items, "inputs")
        if stream and list_input:
            raise invalid("`stream: true` takes a single input, not a list")
        for name in TGI_UNSUPPORTED:
            if getattr(params, name):
                raise invalid(f"`parameters.{name}` is not supported by this server; leave it unset")
        if (params.best_of or 1) != 1:
            raise invalid("`parameters.best_of` must be 1 (best-of sampling is not supported)")
        sampling = self._tgi_sampling(params)
        guide = self._grammar(params.grammar)
        adapter = self._adapter(params.adapter_id)
        requests, texts = [], []
        for i, item in enumerate(items):
            where = f"inputs[{i}]" if list_input else "inputs"
            text = self._render_input(item, where)
            ids = self._encode(text, where)
            if params.truncate is not None:
                ids = ids[-params.truncate:]
            requests.append(self._request(ids, where, sampling, asked=params.max_new_tokens, stop=params.stops,
                                          prefix="parameters.", stream=stream, guide=guide, adapter=adapter))
            texts.append(text)
        options = {"details": bool(params.details), "decoder_input_details": bool(params.decoder_input_details),
                   "return_full_text": bool(params.return_full_text)}
        return Invocation("tgi", requests, texts, stream, list_input, options)

    def dialogs(self, body: DialogRequest) -> Invocation:
        params = body.parameters or SamplingParameters()
        inputs = body.inputs
        dialogs = inputs if inputs and isinstance(inputs[0], list) else [inputs]
        self._check_count(dialogs, "inputs")
        if body.stream:
            raise invalid("streaming is not available for Llama-2 dialog lists; use `messages` (OpenAI chat)")
        sampling = self._tgi_sampling(params)
        requests, texts = [], []
        for i, dialog in enumerate(dialogs):
            where = f"inputs[{i}]"
            text = self._render_chat(dialog, where)
            requests.append(self._request(self._encode(text, where), where, sampling, asked=params.max_new_tokens,
                                          stop=params.stops, prefix="parameters."))
            texts.append(text)
        return Invocation("dialog", requests, texts, False, True)

    def flan(self, body: FlanRequest) -> Invocation:
        inputs = body.text_inputs
        list_input = isinstance(inputs, list)
        items = inputs if list_input else [inputs]
        self._check_count(items, "text_inputs")
        if (body.num_beams or 1) != 1:
            raise invalid("`num_beams` must be 1 (beam search is not supported; use do_sample or greedy)")
        sampling = self._sampling(body, do_sample=bool(body.do_sample))
        requests, texts = [], []
        for i, item in enumerate(items):
            where = f"text_inputs[{i}]" if list_input else "text_inputs"
            text = self._render_input(item, where)
            ids = self._encode(text, where)
            asked = body.max_new_tokens
            if asked is None and body.max_length is not None:
                # HF semantics: max_length counts the prompt (causal) or the decoder start token.
                asked = body.max_length - (1 if self.loaded.seq2seq else len(ids))
                if asked < 1:
                    raise invalid(f"`max_length` ({body.max_length}) leaves no room to generate after the "
                                  f"{len(ids)}-token prompt; raise it or use max_new_tokens")
            requests.append(self._request(ids, where, sampling, asked=asked, stop=body.stop,
                                          n=body.num_return_sequences or 1))
            texts.append(text)
        return Invocation("flan", requests, texts, False, list_input)

    def chat(self, body: dict) -> Invocation:
        return parse_chat(self, body)

    def completion(self, body: dict) -> Invocation:
        return parse_completion(self, body)

    def _grammar(self, grammar):
        """TGI's `parameters.grammar`: {"type": "json", "value": schema} or {"type": "regex", "value": pattern}."""
        if grammar is None:
            return None
        kind = grammar.get("type") if isinstance(grammar, dict) else None
        value = grammar.get("value") if isinstance(grammar, dict) else None
        if kind == "json" and isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):  # not JSON, or numbers too long for Python
                value = None
        if not ((kind == "regex" and isinstance(value, str)) or (kind == "json" and isinstance(value, dict))):
            raise invalid('`parameters.grammar` must be {"type": "json", "value": <JSON schema>} or '
                          '{"type": "regex", "value": <pattern>}')
        return self.guide("parameters.grammar", regex=value) if kind == "regex" else \
            self.guide("parameters.grammar", schema=value)

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

    def _render_chat(self, messages, where: str, tools=None) -> str:
        from .structured import ToolPlan, template_messages

        clean = self._chat_messages(messages, where)
        if self.prompt_format.takes_fields:  # an instruction fine-tune: its template, not a chat one
            if tools is not None and (tools.tools or any(m["role"] == "tool" for m in clean)):
                raise invalid("`tools` need a chat model; this model was fine-tuned on an instruction template")
            try:
                return self.prompt_format.render_messages([{"role": m["role"], "content": m["content"]}
                                                           for m in clean])
            except ValueError as exc:
                raise invalid(f"`{where}` does not fit this model: {exc}. Send the conversation as one user "
                              "message, or the prompt fields as `inputs`") from None
        template = self.prompt_format.chat_template or chat_template_for(self.tokenizer)
        plan = tools or ToolPlan()
        try:
            return apply_template(self.tokenizer, template_messages(clean, plan, template), template,
                                  add_generation_prompt=True, tools=list(plan.tools) or None)
        except TemplateTooSlow:
            raise PayloadError(500, f"the model's chat template did not render this conversation within "
                               f"{RENDER_SECONDS:g} s (a loop in the template); fix the template in the model "
                               "folder's tokenizer files", "chat_template") from None
        except Exception as exc:  # a template's raise_exception (e.g. roles must alternate)
            raise invalid(f"`{where}` does not fit the model's chat template: {exc}") from None

    def _chat_messages(self, messages, where: str) -> list[dict]:
        """Checked messages; `developer` (the openai SDK's name for system) becomes `system`."""
        if not isinstance(messages, list) or not messages:
            raise invalid(f"`{where}` must be a non-empty list of {{role, content}} messages")
        clean = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise invalid(f"`{where}[{i}]` must be an object with `role` and `content`")
            role = message["role"]
            if role not in CHAT_ROLES:
                raise invalid(f"`{where}[{i}].role` must be one of {list(CHAT_ROLES)}, got {show(role)}")
            item = {"role": "system" if role == "developer" else role}
            calls = message.get("tool_calls") if role == "assistant" else None
            content = message.get("content")
            item["content"] = "" if content is None and calls else text_content(content, f"{where}[{i}].content")
            if calls:
                if not isinstance(calls, list):
                    raise invalid(f"`{where}[{i}].tool_calls` must be a list")
                item["tool_calls"] = calls
            for key in ("tool_call_id", "name") if role == "tool" else ():  # others render as training did
                if isinstance(message.get(key), str):
                    item[key] = message[key]
            clean.append(item)
        return clean

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
    def _request(self, ids: list[int], where: str, sampling: Sampling, *, asked: int | None = None, stop=None,
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

    def _adapter(self, adapter_id) -> str | None:
        """TGI's `parameters.adapter_id`: one of the model folder's adapters/ by name."""
        if adapter_id is None:
            return None
        adapters = self.loaded.info.adapters
        if not isinstance(adapter_id, str) or adapter_id not in adapters:
            served = (f"its adapters are {', '.join(sorted(adapters))}" if adapters else
                      "it serves no adapters (they go in <model_dir>/adapters/<name>/)")
            raise invalid(f"`parameters.adapter_id` {show(adapter_id)} is not an adapter of this server; {served}")
        return adapter_id

    def _tgi_sampling(self, params) -> Sampling:
        """TGI's rule: sampling is on when asked for or when any warper is set."""
        warped = params.top_k is not None or params.top_p is not None or params.temperature not in (None, 1.0)
        return self._sampling(params, do_sample=bool(params.do_sample) or warped)

    def _openai_sampling(self, body) -> Sampling:
        """OpenAI's rule: temperature 0 is greedy, anything else (default 1) samples."""
        return self._sampling(body, do_sample=body.temperature != 0)

    @staticmethod
    def _sampling(params, *, do_sample: bool) -> Sampling:
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


# ---------------------------------------------------------------------- field helpers
def _is_dialog_list(inputs) -> bool:
    """[[{role, content}]] (several dialogs) or [{role, content}] (one)."""
    if not isinstance(inputs, list) or not inputs:
        return False
    first = inputs[0]
    if isinstance(first, list):
        return True
    return isinstance(first, dict) and "role" in first and "content" in first
