"""The routes, as two Flask blueprints.

`core` holds SageMaker's contract (/ping, /invocations, /execution-parameters), TGI's `/` and
/metrics. `api` holds the TGI, OpenAI and tokenizer routes; it is registered twice, at the root
and under /invocations, so a client given `<endpoint>/invocations` as its base URL (the form
SageMaker endpoints are called by, e.g. huggingface_hub's InferenceClient) finds them there too.
"""

from __future__ import annotations

import math

from flask import Blueprint, Response, current_app, request

from .chat_messages import read_messages
from .errors import PayloadError, invalid
from .fields import read_bool
from .generation import generate_view
from .http import json_response
from .openai_requests import prompt_ids
from .prompting import render_chat

core = Blueprint("core", __name__)
api = Blueprint("api", __name__)
CORE_GENERATE = {"/invocations": "invocations", "/": "invocations"}
API_GENERATE = {"/generate": "generate", "/generate_stream": "generate_stream",
                "/v1/chat/completions": "chat", "/v1/completions": "completion", "/v1/responses": "responses"}


def state():
    return current_app.extensions["tuneforge"]


def ready_state():
    current = state()
    if current.status != "ready":
        raise PayloadError(503, "model is loading" if current.status == "loading"
                           else f"model failed to load: {current.error}", "unhealthy")
    return current


for _path, _route in CORE_GENERATE.items():
    core.add_url_rule(_path, f"generate_{_route}_{_path}", generate_view(ready_state, _route, bare=False),
                      methods=["POST"])
for _path, _route in API_GENERATE.items():
    api.add_url_rule(_path, f"generate_{_route}", generate_view(ready_state, _route, bare=_path == "/generate"),
                     methods=["POST"])


@core.get("/ping")
@api.get("/health")
def ping():
    current = state()
    if current.status == "ready":
        return json_response({"status": "ready"})
    raise PayloadError(503, "model is loading" if current.status == "loading"
                       else f"model failed to load: {current.error}", "unhealthy")


@core.get("/execution-parameters")
def execution_parameters():
    settings = state().settings
    # Batch Transform caps MaxConcurrentTransforms x MaxPayloadInMB at 100.
    payload = min(100, max(1, math.ceil(settings.max_body_mb)))
    concurrent = max(1, min(settings.workers * settings.max_batch_size, 100 // payload))
    return json_response({"MaxConcurrentTransforms": concurrent, "BatchStrategy": "MULTI_RECORD",
                          "MaxPayloadInMB": payload})


@core.get("/metrics")
def metrics():
    current = state()
    text = current.metrics.render()
    engine_metrics = getattr(current.engine, "engine_metrics", None)
    if engine_metrics is not None:  # the vLLM engine's own: queue, running requests, KV cache use, tokens
        text += engine_metrics()
    return Response(text, mimetype="text/plain; version=0.0.4")


def _model_cards(loaded) -> list[dict]:
    """The weights, then each adapter on them (vLLM's shape: `parent` names the base)."""
    length = loaded.max_total_tokens or loaded.max_input_tokens
    base = {"id": loaded.info.name, "object": "model", "created": 0, "owned_by": "tuneforge", "max_model_len": length}
    return [base] + [dict(base, id=name, parent=loaded.info.name) for name in loaded.info.adapters]


@api.get("/v1/models")
def models():
    return json_response({"object": "list", "data": _model_cards(ready_state().loaded)})


@api.get("/v1/models/<path:model_id>")
def model(model_id: str):
    cards = {card["id"]: card for card in _model_cards(ready_state().loaded)}
    if model_id not in cards:
        raise PayloadError(404, f"model {model_id!r} is not served here; this server serves "
                           f"{', '.join(repr(name) for name in cards)}", "not_found")
    return json_response(cards[model_id])


@api.get("/info")
def info():
    """TGI's /info fields (huggingface_hub's get_endpoint_info), plus tuneforge's own."""
    from .. import __version__

    current = ready_state()
    loaded, settings = current.loaded, current.settings
    return json_response({
        "model_id": loaded.info.name, "model_sha": None, "model_dtype": str(loaded.model.dtype),
        "model_device_type": loaded.device.split(":")[0], "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": settings.workers * settings.threads, "max_best_of": 1,
        "max_stop_sequences": settings.max_stop_sequences, "max_input_tokens": loaded.max_input_tokens,
        "max_input_length": loaded.max_input_tokens, "max_total_tokens": loaded.max_total_tokens,
        "max_batch_total_tokens": settings.max_batch_tokens, "max_batch_size": settings.max_batch_size,
        "max_client_batch_size": settings.max_client_batch, "router": "tuneforge", "version": __version__,
        "sha": None, "docker_label": None,
        "model_dir": str(loaded.info.model_dir), "architecture": "seq2seq" if loaded.seq2seq else "causal",
        "adapter_only": loaded.info.adapter_only, "adapters": sorted(loaded.info.adapters),
        "prompt_kind": loaded.info.prompt.kind,
        "device": loaded.device})


# ---------------------------------------------------------------------- tokenizer (vLLM's routes)
@api.get("/tokenizer_info")
def tokenizer_info():
    from ..data.prompt import chat_template_for

    current = ready_state()
    tokenizer, fmt = current.loaded.tokenizer, current.loaded.info.prompt
    return json_response({"tokenizer_class": type(tokenizer).__name__, "eos_token": tokenizer.eos_token,
                          "bos_token": tokenizer.bos_token, "pad_token": tokenizer.pad_token,
                          "unk_token": tokenizer.unk_token, "vocab_size": len(tokenizer),
                          "model_max_length": current.loaded.max_total_tokens or current.loaded.max_input_tokens,
                          "chat_template": fmt.chat_template or chat_template_for(tokenizer)})


@api.post("/tokenize")
def tokenize():
    """vLLM's shape: {"prompt": str} or {"messages": [...]}, with add_special_tokens (default
    true: the ids the server itself would generate from; a prompt gets the tokenizer's own special
    tokens, as on /v1/completions) -> {"count", "max_model_len", "tokens"}."""
    current = ready_state()
    body = _json_body()
    loaded, limits = current.loaded, current.parser.limits
    special = read_bool(body, "add_special_tokens", True, "")
    if "messages" in body:
        text = render_chat(limits, read_messages(body["messages"], "messages"), "messages")
        ids = limits.encode(text, "messages") if special else loaded.tokenizer(text, add_special_tokens=False)[
            "input_ids"]
    elif isinstance(body.get("prompt"), str):
        ids = prompt_ids(limits, body["prompt"], "prompt", special)
    else:
        raise invalid("send `prompt` (a string) or `messages` (a chat) to tokenize")
    answer = {"count": len(ids), "max_model_len": loaded.max_total_tokens or loaded.max_input_tokens, "tokens": ids}
    if read_bool(body, "return_token_strs", False, ""):
        answer["token_strs"] = loaded.tokenizer.convert_ids_to_tokens(ids)
    return json_response(answer)


@api.post("/detokenize")
def detokenize():
    tokenizer = ready_state().loaded.tokenizer
    tokens = _json_body().get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise invalid("`tokens` must be a list of token ids (integers)")
    bad = next((t for t in tokens if not 0 <= t < len(tokenizer)), None)
    if bad is not None:
        raise invalid(f"`tokens` holds {bad}, outside this tokenizer's vocabulary (0 to {len(tokenizer) - 1})")
    return json_response({"prompt": tokenizer.decode(tokens)})


def _json_body() -> dict:
    from .generation import loads

    body = loads(request.get_data(cache=False).decode("utf-8", errors="replace") or "{}", "")
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    return body
