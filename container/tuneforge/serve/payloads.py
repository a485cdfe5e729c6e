"""Request bodies -> GenerationRequests: which body model each route reads.

Formats (docs/payloads.md has examples of each):
  tgi         {"inputs": str | [str] | {fields} , "parameters": {...}, "stream": bool}
  dialog      {"inputs": [[{role, content}, ...], ...], "parameters": {...}}  (JumpStart Llama-2)
  flan        {"text_inputs": str | [str], "max_length": .., "num_return_sequences": .., ...}
  chat        {"messages": [...], "max_tokens": .., ...}      (OpenAI chat)
  completion  {"prompt": str | [str] | [ids] | [[ids]], ...}   (OpenAI completions)
  responses   {"input": str | [messages], ...}                 (OpenAI Responses, read as chat)
  text        a bare prompt (text/plain)
A route names the body models it takes (ROUTE_MODELS); where several share a route, the first
that claims the body reads it. `Parser.validate` is the one step between a body and generation, as
TGI's: the body is read into its model (bodies.py), which refuses fields it does not take and values
outside their types, then converts itself within the server's limits (`to_requests(limits)`); the
result is the Invocation or the PayloadError that refuses the request, returned, not raised.
"""

from __future__ import annotations

from .bodies import (ChatRequest, CompletionRequest, DialogRequest, FlanRequest, Request, ResponsesRequest,
                     SamplingParameters, TGIRequest)
from .errors import PayloadError, invalid
from .invocation import Invocation
from .limits import ServerLimits
from .tgi_requests import text_requests

__all__ = ["PayloadError", "Parser", "ROUTE_MODELS"]

TGI_MODELS = (DialogRequest, TGIRequest)
ROUTE_MODELS: dict[str, tuple[type[Request], ...]] = {
    "invocations": (ChatRequest, CompletionRequest, FlanRequest) + TGI_MODELS,
    "chat": (ChatRequest,),
    "completion": (CompletionRequest,),
    "responses": (ResponsesRequest,),
    "generate": TGI_MODELS,
    "generate_stream": TGI_MODELS,
}


class Parser:
    """The route -> body-model table, applied within one server's limits."""

    def __init__(self, loaded, settings):
        self.loaded, self.settings = loaded, settings
        self.tokenizer = loaded.tokenizer
        self.limits = ServerLimits(loaded, settings)

    def validate(self, body, route: str = "invocations") -> Invocation | PayloadError:
        """The Invocation a JSON body sent to `route` asks for, or the error that refuses it."""
        try:
            if isinstance(body, str):
                return self.text(body)
            if not isinstance(body, dict):
                raise invalid("the request body must be a JSON object (or a JSON string holding a prompt)")
            model = body_model(route, body)
            return model.read(body, limits=self.limits.field_bounds).to_requests(self.limits, route)
        except PayloadError as refused:
            return refused

    def parse(self, body, route: str = "invocations") -> Invocation:
        """validate, raising its error (for callers that let the server answer it)."""
        result = self.validate(body, route)
        if isinstance(result, PayloadError):
            raise result
        return result

    def text(self, prompt: str) -> Invocation:
        return text_requests(prompt, SamplingParameters(), self.limits)


def body_model(route: str, body: dict) -> type[Request]:
    """The model that reads `body` sent to `route`: a route's only model, or the first that claims it."""
    models = ROUTE_MODELS.get(route, TGI_MODELS)
    if len(models) == 1:
        return models[0]
    found = next((model for model in models if model.claims(body)), None)
    if found is None:
        raise invalid("the request names no input: send `inputs` (TGI/JumpStart), `text_inputs` (Flan-T5), "
                      "`messages` (OpenAI chat) or `prompt` (OpenAI completions)")
    return found
