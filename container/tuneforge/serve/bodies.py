"""One pydantic model per JSON request format: the fields each takes, declared once.

A body is read into its format's model before anything is generated, so a field the format does
not know (a typo such as `max_new_token`, or an option of another API) is a 422 naming the field,
the format and the closest known name, never silently dropped. Each field is declared with its
type and range (fields.py's Int, Number, Flag, Stop), so a value outside them is a 422 naming the
field, the allowed range and the value sent. Messages and content parts (chat_messages.py), tools,
tool_choice and response_format (openai_types.py), prompts and TGI's grammar (prompt_types.py) are
typed too, unions told apart by a tag, each wording its own 422. Options of the APIs this server does
not implement are declared with their type as `Refused`: a value that asks for nothing (unset, 0,
false, empty) is taken, any other is a 422 saying what to send instead. No field is `Any`: once read,
a body is valid as typed, and `to_requests(limits)` turns it into the GenerationRequests for the
server's limits (tgi_requests.py, openai_requests.py).

The declared fields are the ones the format's real clients send (openai SDK, huggingface_hub
InferenceClient, lm-evaluation-harness, LangChain, JumpStart/SageMaker examples). A few change
nothing the server computes and are accepted for that reason (OpenAI's `model`, `user`,
`metadata`, `store`, `service_tier`, `parallel_tool_calls`, `safety_identifier`,
`prompt_cache_key`; Flan-T5's `early_stopping`, meaningless without beam search).
"""

from __future__ import annotations

import difflib
from typing import Annotated, ClassVar, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr, Strict, ValidationError

from .chat_messages import Dialogs, Messages
from .errors import invalid
from .fields import (Flag, Int, Number, Refused, Stop, Text, Worded, declared, refusal, unset_when_empty,
                     within_limits)
from .invocation import Invocation
from .openai_requests import chat_requests, completion_requests
from .openai_types import ModelName, ResponseFormat, ToolChoice, Tools
from .prompt_types import CompletionPrompt, Grammar, Inputs
from .responses_api import chat_body
from .tgi_requests import dialog_requests, flan_requests, tgi_requests

MAX_SEED = (1 << 64) - 1
MAX_TOP_LOGPROBS = 20  # as OpenAI's chat API and vLLM
Temperature = Number(0.0, 100.0, open_low=True)  # 0 is not a temperature: leave do_sample false
TopP = Number(0.0, 1.0, open_low=True)
TopK = Int(0, 1 << 20)  # 0: off
RepetitionPenalty = Number(0.0, 100.0, open_low=True)
NgramSize = Int(0, 1 << 10)
Seed = Int(0, MAX_SEED)
Penalty = Number(-2.0, 2.0, open_low=False)  # OpenAI's presence/frequency penalties
UNSET = "is not supported by this server; leave it unset"
NO_PENALTY = "is not supported by this server; use repetition_penalty"
ONE_SEQUENCE = "must be 1 (best-of sampling is not supported)"
BEFORE_TOOLS = "is the API before tools; send `tools` and `tool_choice`"
NO_INFILL = ("is not supported: fill-in-the-middle needs a model trained for it; leave `suffix` unset and send "
             "the text before the gap as `prompt`")
Strings = Optional[Annotated[dict[str, Annotated[str, Strict()]],
                             Worded(lambda where, loc, error: f"`{where}` must be an object of strings")]]
TokenBias = Optional[Annotated[dict[str, float],
                               Worded(lambda where, loc, error: f"`{where}` must map token ids to numbers")]]
EarlyStopping = Optional[Annotated[Annotated[bool, Strict()] | Literal["never"],
                                   Worded(lambda where, loc, error: f'`{where}` must be true, false or "never"')]]


class Body(BaseModel):
    """A request body of one format, every field declared with its type and range."""

    model_config = ConfigDict(extra="allow", frozen=True)
    FORMAT: ClassVar[str] = ""
    _raw: dict = PrivateAttr(default_factory=dict)

    @classmethod
    def read(cls, body: dict, prefix: str = "", fmt: str | None = None, limits: dict[str, int] | None = None):
        """The body as this model; a 422 for the first field the format does not take, then for
        the first value outside its declaration or over the server's `limits` ({field: most})."""
        cls._refuse_unknown(body, prefix, fmt or cls.FORMAT)
        limits = {k: v for k, v in (limits or {}).items() if k in cls.model_fields}
        try:
            model = cls.model_validate(body)
        except ValidationError as exc:
            raise refusal(cls, exc, limits) from None
        within_limits(model, limits)
        model._raw = body
        return model

    @classmethod
    def _refuse_unknown(cls, body: dict, prefix: str, fmt: str) -> None:
        known = list(cls.model_fields)
        for name in body:
            if name not in cls.model_fields:
                close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
                hint = f"did you mean `{prefix}{close[0]}`?" if close else f"remove it (known: {', '.join(known)})"
                raise invalid(f"`{prefix}{name}` is not a field of {fmt} requests; {hint}")
        for name, field in cls.model_fields.items():
            kind, _ = declared(field.annotation)
            if isinstance(kind, type) and issubclass(kind, Body) and isinstance(body.get(name), dict):
                kind._refuse_unknown(body[name], f"{prefix}{name}.", fmt)

    @property
    def raw(self) -> dict:
        """The body as sent."""
        return self._raw


class Request(Body):
    """A whole request of one format, which converts itself into GenerationRequests."""

    @classmethod
    def claims(cls, body: dict) -> bool:
        """Whether a body sent to a route several formats share is of this format."""
        return False

    def to_requests(self, limits, route: str = "invocations") -> Invocation:
        """The Invocation this body asks for, within `limits` (a limits.ServerLimits)."""
        raise NotImplementedError


def _object(model: type[BaseModel]):
    """An optional object field; an empty value ({} [] "" false) means none was given."""
    return Annotated[Optional[model], BeforeValidator(unset_when_empty)]


# ---------------------------------------------------------------------- TGI / JumpStart
class SamplingParameters(Body):
    """What every TGI-style `parameters` object takes."""

    max_new_tokens: Int(1) = None
    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    do_sample: Flag = None
    repetition_penalty: RepetitionPenalty = None
    no_repeat_ngram_size: NgramSize = None
    seed: Seed = None
    stop: Stop = None
    stop_sequences: Stop = None  # LMI's name for stop

    @property
    def stops(self):
        return self.stop if self.stop is not None else self.stop_sequences


class TGIParameters(SamplingParameters):
    details: Flag = None
    decoder_input_details: Flag = None
    return_full_text: Flag = None
    truncate: Int(1) = None
    best_of: Refused(Int(0), ONE_SEQUENCE, taken=(1,)) = None  # 0 counts as unset
    grammar: Grammar = None
    adapter_id: Text = None  # one of the model folder's adapters/ (limits.adapter)
    # TGI's, taken only unset; huggingface_hub sends them when asked
    typical_p: Refused(Number(0.0, 1.0, open_low=False), UNSET) = None
    watermark: Refused(Flag, UNSET) = None
    top_n_tokens: Refused(Int(0), UNSET) = None
    frequency_penalty: Refused(Penalty, UNSET) = None


class TGIRequest(Request):
    """{"inputs": str | [str] | {prompt fields}, "parameters": {...}, "stream": bool} (TGI, JumpStart)."""

    FORMAT: ClassVar[str] = "TGI"
    inputs: Inputs = None
    parameters: _object(TGIParameters) = None
    stream: Flag = None

    @classmethod
    def claims(cls, body: dict) -> bool:
        return "inputs" in body

    def to_requests(self, limits, route: str = "invocations") -> Invocation:
        return tgi_requests(self, self.parameters or TGIParameters(), limits, force_stream=route == "generate_stream")


class DialogRequest(Request):
    """{"inputs": [[{role, content}, ...], ...], "parameters": {...}} (JumpStart Llama-2 chat)."""

    FORMAT: ClassVar[str] = "Llama-2 dialog"
    inputs: Dialogs = None
    parameters: _object(SamplingParameters) = None
    stream: Flag = None

    @classmethod
    def claims(cls, body: dict) -> bool:
        """[[{role, content}]] (several dialogs) or [{role, content}] (one)."""
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            return False
        first = inputs[0]
        return isinstance(first, list) or (isinstance(first, dict) and "role" in first and "content" in first)

    def to_requests(self, limits, route: str = "invocations") -> Invocation:
        return dialog_requests(self, self.parameters or SamplingParameters(), limits)


class FlanRequest(Request):
    """{"text_inputs": str | [str], "max_length": .., ...} (JumpStart Flan-T5 / text2text)."""

    FORMAT: ClassVar[str] = "JumpStart text_inputs"
    text_inputs: Inputs = None
    max_length: Int(1, 1 << 20) = None
    max_new_tokens: Int(1) = None
    num_return_sequences: Int(1) = None  # at most TUNEFORGE_MAX_RETURN_SEQUENCES (limits)
    num_beams: Int(1) = None  # refused unless 1
    early_stopping: EarlyStopping = None  # only means something with beam search, which is refused
    do_sample: Flag = None
    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    repetition_penalty: RepetitionPenalty = None
    no_repeat_ngram_size: NgramSize = None
    seed: Seed = None
    stop: Stop = None

    @classmethod
    def claims(cls, body: dict) -> bool:
        return "text_inputs" in body

    def to_requests(self, limits, route: str = "invocations") -> Invocation:
        return flan_requests(self, limits)


# ---------------------------------------------------------------------- OpenAI
class StreamOptions(BaseModel):
    """OpenAI's `stream_options`; other keys are taken and mean nothing here."""

    model_config = ConfigDict(extra="allow", frozen=True)
    include_usage: Flag = None


class OpenAICommon(Request):
    """Fields both OpenAI formats share, with the vLLM-style extensions the server implements."""

    model: ModelName = None
    max_tokens: Int(1) = None
    max_completion_tokens: Int(1) = None
    temperature: Number(0.0, 2.0, open_low=False) = None  # 0: greedy
    top_p: TopP = None
    n: Int(1) = None  # at most TUNEFORGE_MAX_RETURN_SEQUENCES (limits)
    stop: Stop = None
    seed: Seed = None
    stream: Flag = None
    stream_options: _object(StreamOptions) = None
    presence_penalty: Refused(Penalty, NO_PENALTY) = None
    frequency_penalty: Refused(Penalty, NO_PENALTY) = None
    logit_bias: Refused(TokenBias, UNSET) = None
    best_of: Refused(Int(1), ONE_SEQUENCE, taken=(1,)) = None
    # no effect on the answer
    user: Text = None
    metadata: Strings = None
    store: Flag = None
    service_tier: Text = None
    safety_identifier: Text = None
    prompt_cache_key: Text = None
    # extensions (vLLM's names)
    top_k: TopK = None
    repetition_penalty: RepetitionPenalty = None
    no_repeat_ngram_size: NgramSize = None

    @property
    def max_field(self) -> str:
        """The name the client gave the token limit (max_completion_tokens wins)."""
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class ChatRequest(OpenAICommon):
    """OpenAI chat completions: {"messages": [...], ...}."""

    FORMAT: ClassVar[str] = "OpenAI chat"
    messages: Messages = None
    logprobs: Flag = None
    top_logprobs: Int(0, MAX_TOP_LOGPROBS) = None
    response_format: ResponseFormat = None
    tools: Tools = None
    tool_choice: ToolChoice = None
    parallel_tool_calls: Flag = None
    functions: Refused(Optional[list[dict]], BEFORE_TOOLS) = None
    function_call: Refused(Optional[Annotated[str, Strict()] | dict], BEFORE_TOOLS) = None

    @classmethod
    def claims(cls, body: dict) -> bool:
        return "messages" in body

    def to_requests(self, limits, route: str = "invocations") -> Invocation:
        return chat_requests(self, limits)


class ResponsesRequest(ChatRequest):
    """OpenAI's Responses API, read as the chat request it means (responses_api.py)."""

    @classmethod
    def read(cls, body: dict, prefix: str = "", fmt: str | None = None, limits: dict[str, int] | None = None):
        return super().read(chat_body(body), prefix, fmt or ChatRequest.FORMAT, limits)

    def to_requests(self, limits, route: str = "invocations") -> Invocation:
        invocation = chat_requests(self, limits)
        invocation.kind = "responses"  # answered in the Responses shape
        return invocation


class CompletionRequest(OpenAICommon):
    """OpenAI completions: {"prompt": str | [str] | [ids] | [[ids]], ...}."""

    FORMAT: ClassVar[str] = "OpenAI completions"
    max_tokens: Int(0) = None  # 0 with echo: score the prompt only
    max_completion_tokens: Int(0) = None
    logprobs: Int(0, MAX_TOP_LOGPROBS) = None  # how many alternatives per token
    prompt: CompletionPrompt = None
    echo: Flag = None
    add_special_tokens: Flag = None  # vLLM's: string prompts get the tokenizer's own special tokens (default true)
    suffix: Refused(Text, NO_INFILL) = None

    @classmethod
    def claims(cls, body: dict) -> bool:
        return "prompt" in body and "inputs" not in body

    def to_requests(self, limits, route: str = "invocations") -> Invocation:
        return completion_requests(self, limits)
