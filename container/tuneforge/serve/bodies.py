"""One pydantic model per JSON request format: the fields each takes, declared once.

A body is read into its format's model before anything is generated, so a field the format does
not know (a typo such as `max_new_token`, or an option of another API) is a 422 naming the field,
the format and the closest known name, never silently dropped. Values are checked afterwards, in
the format's own terms, by the Parser (payloads.py, openai_requests.py) through fields.py, whose
messages name the field, the allowed range and the value sent; `invocation` turns a read body into
the GenerationRequests for the server's limits.

The declared fields are the ones the format's real clients send (openai SDK, huggingface_hub
InferenceClient, lm-evaluation-harness, LangChain, JumpStart/SageMaker examples). A few change
nothing the server computes and are accepted for that reason (OpenAI's `model`, `user`,
`metadata`, `store`, `service_tier`, `parallel_tool_calls`, `safety_identifier`,
`prompt_cache_key`; Flan-T5's `early_stopping`, meaningless without beam search).
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, PrivateAttr

from .errors import invalid
from .invocation import Invocation


class Body(BaseModel):
    """A request body of one format. Field values are `Any` here: their checks, with messages
    naming the field, run where the value is used."""

    model_config = ConfigDict(extra="allow", frozen=True)
    FORMAT: ClassVar[str] = ""
    NESTED: ClassVar[dict[str, type["Body"]]] = {}  # field -> the model of its object value
    _raw: dict = PrivateAttr(default_factory=dict)

    @classmethod
    def read(cls, body: dict, prefix: str = "", fmt: str | None = None):
        """The body as this model; a 422 for the first field the format does not take."""
        fmt = fmt or cls.FORMAT
        model = cls.model_validate(body)
        known = list(cls.model_fields)
        for name in model.model_extra or {}:
            close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
            hint = f"did you mean `{prefix}{close[0]}`?" if close else f"remove it (known: {', '.join(known)})"
            raise invalid(f"`{prefix}{name}` is not a field of {fmt} requests; {hint}")
        for name, kind in cls.NESTED.items():
            if isinstance(body.get(name), dict):
                kind.read(body[name], f"{prefix}{name}.", fmt)
        model._raw = body
        return model

    @property
    def raw(self) -> dict:
        """The body as sent (values unchecked)."""
        return self._raw


# ---------------------------------------------------------------------- TGI / JumpStart
class SamplingParameters(Body):
    """What every TGI-style `parameters` object takes."""

    max_new_tokens: Any = None
    temperature: Any = None
    top_p: Any = None
    top_k: Any = None
    do_sample: Any = None
    repetition_penalty: Any = None
    no_repeat_ngram_size: Any = None
    seed: Any = None
    stop: Any = None
    stop_sequences: Any = None  # LMI's name for stop


class TGIParameters(SamplingParameters):
    details: Any = None
    decoder_input_details: Any = None
    return_full_text: Any = None
    truncate: Any = None
    best_of: Any = None
    grammar: Any = None
    # TGI's, taken only unset (payloads.TGI_UNSUPPORTED); huggingface_hub sends them when asked
    typical_p: Any = None
    watermark: Any = None
    top_n_tokens: Any = None
    adapter_id: Any = None
    frequency_penalty: Any = None


class TGIRequest(Body):
    """{"inputs": str | [str] | {prompt fields}, "parameters": {...}, "stream": bool} (TGI, JumpStart)."""

    FORMAT: ClassVar[str] = "TGI"
    NESTED: ClassVar[dict[str, type[Body]]] = {"parameters": TGIParameters}
    inputs: Any = None
    parameters: Any = None
    stream: Any = None

    def invocation(self, parser, *, force_stream: bool = False) -> Invocation:
        return parser.tgi(self.raw, force_stream=force_stream)


class DialogRequest(Body):
    """{"inputs": [[{role, content}, ...], ...], "parameters": {...}} (JumpStart Llama-2 chat)."""

    FORMAT: ClassVar[str] = "Llama-2 dialog"
    NESTED: ClassVar[dict[str, type[Body]]] = {"parameters": SamplingParameters}
    inputs: Any = None
    parameters: Any = None
    stream: Any = None

    def invocation(self, parser) -> Invocation:
        return parser.dialogs(self.raw)


class FlanRequest(Body):
    """{"text_inputs": str | [str], "max_length": .., ...} (JumpStart Flan-T5 / text2text)."""

    FORMAT: ClassVar[str] = "JumpStart text_inputs"
    text_inputs: Any = None
    max_length: Any = None
    max_new_tokens: Any = None
    num_return_sequences: Any = None
    num_beams: Any = None
    early_stopping: Any = None  # only means something with beam search, which is refused
    do_sample: Any = None
    temperature: Any = None
    top_p: Any = None
    top_k: Any = None
    repetition_penalty: Any = None
    no_repeat_ngram_size: Any = None
    seed: Any = None
    stop: Any = None

    def invocation(self, parser) -> Invocation:
        return parser.flan(self.raw)


# ---------------------------------------------------------------------- OpenAI
class OpenAICommon(Body):
    """Fields both OpenAI formats share, with the vLLM-style extensions the server implements."""

    model: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    temperature: Any = None
    top_p: Any = None
    n: Any = None
    stop: Any = None
    seed: Any = None
    stream: Any = None
    stream_options: Any = None
    logprobs: Any = None
    presence_penalty: Any = None   # refused unless 0
    frequency_penalty: Any = None  # refused unless 0
    logit_bias: Any = None         # refused unless empty
    best_of: Any = None            # refused unless 1
    # no effect on the answer
    user: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    safety_identifier: Any = None
    prompt_cache_key: Any = None
    # extensions (vLLM's names)
    top_k: Any = None
    repetition_penalty: Any = None
    no_repeat_ngram_size: Any = None

    @classmethod
    def read(cls, body: dict, prefix: str = "", fmt: str | None = None):
        model = super().read(body, prefix, fmt)
        if body.get("logit_bias"):
            raise invalid("`logit_bias` is not supported by this server; leave it unset")
        return model


class ChatRequest(OpenAICommon):
    """OpenAI chat completions: {"messages": [...], ...}."""

    FORMAT: ClassVar[str] = "OpenAI chat"
    messages: Any = None
    top_logprobs: Any = None
    response_format: Any = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    functions: Any = None      # refused: the API before tools
    function_call: Any = None  # refused: the API before tools

    def invocation(self, parser) -> Invocation:
        from .openai_requests import parse_chat

        return parse_chat(parser, self.raw)


class CompletionRequest(OpenAICommon):
    """OpenAI completions: {"prompt": str | [str] | [ids] | [[ids]], ...}."""

    FORMAT: ClassVar[str] = "OpenAI completions"
    prompt: Any = None
    echo: Any = None
    suffix: Any = None  # refused: fill-in-the-middle

    def invocation(self, parser) -> Invocation:
        from .openai_requests import parse_completion

        return parse_completion(parser, self.raw)
