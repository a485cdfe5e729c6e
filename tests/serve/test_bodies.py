"""Request bodies read into their declared models: types, ranges and the 422 each refusal reads."""

from __future__ import annotations

import pytest

from tuneforge.serve.bodies import ChatRequest, CompletionRequest, DialogRequest, FlanRequest, TGIRequest
from tuneforge.serve.errors import PayloadError

LIMITS = {"n": 8, "num_return_sequences": 8}


def refused(kind, body) -> str:
    with pytest.raises(PayloadError) as caught:
        kind.read(body, limits=LIMITS)
    assert caught.value.status == 422 and caught.value.error_type == "validation"
    return caught.value.message


def tgi(**parameters):
    return {"inputs": "x", "parameters": parameters}


def test_json_integers_written_as_floats_are_integers_and_booleans_are_not():
    body = TGIRequest.read(tgi(max_new_tokens=5.0, top_k=3, seed=(1 << 64) - 1))
    assert (body.parameters.max_new_tokens, body.parameters.seed) == (5, (1 << 64) - 1)
    assert type(body.parameters.max_new_tokens) is int
    assert refused(TGIRequest, tgi(max_new_tokens=True)) == \
        "`parameters.max_new_tokens` must be an integer at least 1, got True"
    assert refused(TGIRequest, tgi(max_new_tokens=0.0)) == \
        "`parameters.max_new_tokens` must be an integer at least 1, got 0"
    assert refused(TGIRequest, tgi(top_k="3")) == "`parameters.top_k` must be an integer between 0 and 1048576, got '3'"
    assert refused(TGIRequest, tgi(seed=1 << 64)).startswith("`parameters.seed` must be an integer between 0 and ")


def test_numbers_take_integers_and_name_their_interval():
    assert TGIRequest.read(tgi(temperature=2, top_p=1)).parameters.temperature == 2.0
    assert refused(TGIRequest, tgi(temperature=0)) == "`parameters.temperature` must be a number in (0, 100], got 0"
    assert refused(ChatRequest, {"messages": [], "temperature": 2.5}) == \
        "`temperature` must be a number in [0, 2], got 2.5"
    assert refused(FlanRequest, {"text_inputs": "x", "top_p": False}) == "`top_p` must be a number in (0, 1], got False"
    assert refused(DialogRequest, {"inputs": [], "parameters": {"repetition_penalty": float("inf")}}) == \
        "`parameters.repetition_penalty` must be a finite number in (0, 100], got inf"


def test_flags_stops_and_objects():
    assert refused(TGIRequest, {"inputs": "x", "stream": 1}) == "`stream` must be true or false, got 1"
    assert refused(TGIRequest, tgi(stop=["a", ""])) == \
        "`parameters.stop` must be a non-empty string or a list of non-empty strings"
    assert refused(TGIRequest, {"inputs": "x", "parameters": [1]}) == "`parameters` must be an object"
    assert refused(ChatRequest, {"messages": [], "stream_options": {"include_usage": "yes"}}) == \
        "`stream_options.include_usage` must be true or false, got 'yes'"
    # an empty object, list or string means "none given", as clients send them
    for empty in ({}, [], "", None):
        assert TGIRequest.read({"inputs": "x", "parameters": empty}).parameters is None
        assert ChatRequest.read({"messages": [], "stream_options": empty}).stream_options is None
    assert DialogRequest.read({"inputs": [], "parameters": {"stop_sequences": "END"}}).parameters.stops == "END"


def test_the_server_limit_is_the_upper_bound_the_message_names():
    assert ChatRequest.read({"messages": [], "n": 8}, limits=LIMITS).n == 8
    assert refused(ChatRequest, {"messages": [], "n": 9}) == "`n` must be an integer between 1 and 8, got 9"
    assert refused(ChatRequest, {"messages": [], "n": "2"}) == "`n` must be an integer between 1 and 8, got '2'"
    assert refused(FlanRequest, {"text_inputs": "x", "num_return_sequences": 0}) == \
        "`num_return_sequences` must be an integer between 1 and 8, got 0"


def test_openai_formats_differ_where_the_apis_do():
    assert ChatRequest.read({"messages": [], "logprobs": True, "top_logprobs": 20}).top_logprobs == 20
    assert refused(ChatRequest, {"messages": [], "logprobs": 2}) == "`logprobs` must be true or false, got 2"
    assert CompletionRequest.read({"prompt": "x", "logprobs": 5, "max_tokens": 0, "echo": True}).max_tokens == 0
    assert refused(CompletionRequest, {"prompt": "x", "logprobs": 21}) == \
        "`logprobs` must be an integer between 0 and 20, got 21"
    body = CompletionRequest.read({"prompt": "x", "max_tokens": 3, "max_completion_tokens": 4})
    assert (body.max_field, body.max_new_tokens) == ("max_completion_tokens", 4)


def test_an_unknown_field_is_named_before_any_value_is_checked():
    assert refused(TGIRequest, tgi(temperature=-1, max_new_token=3)).startswith(
        "`parameters.max_new_token` is not a field of TGI requests")
