"""Each bad request gets its status and a JSON message naming the problem; the server carries on."""

from __future__ import annotations

import pytest
import requests

OK = {"inputs": "What color is the lemon?", "parameters": {"max_new_tokens": 4}}


def tgi(**parameters):
    return {"inputs": "What color is the lemon?", "parameters": parameters}


CASES = [
    # (body or raw bytes, content type, status, error_type, words the message must hold)
    (b'{"inputs": "a", ', "application/json", 400, "malformed_json", ["malformed JSON"]),
    (b"\xff\xfe\xfa", "application/json", 400, "malformed_request", ["UTF-8"]),
    (b'{"inputs": "a", "parameters": {"seed": ' + b"9" * 5000 + b"}}", "application/json", 400, "malformed_json",
     ["a number with more than 4300 digits"]),
    (b'{"inputs": "a", "\\ud800x": 1}', "application/json", 422, "validation", ["`\\ud800x` holds a lone UTF-16"]),
    (b'{"inputs": "a", "parameters": {"grammar": {"type": "json", "value": "' + b"9" * 5000 + b'"}}}',
     "application/json", 422, "validation", ["parameters.grammar"]),
    # grammars whose counted repetitions unroll past the limit: refused before compiling (this one
    # took gigabytes and minutes to compile)
    (tgi(grammar={"type": "regex", "value": "(a{1000}){1000}"}), None, 422, "validation",
     ["parameters.grammar", "too complex", "1,000,000 positions"]),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {
        "name": "s", "schema": {"type": "string", "pattern": "^(a+)+$", "maxLength": 100000}}}}, None, 422, "validation",
     ["response_format", "too complex", "maxLength"]),
    (b"a,b\n1,2\n", "text/csv", 415, "unsupported_media_type", ["text/csv", "application/json"]),
    (b"", "text/plain", 422, "validation", ["empty"]),
    ({"foo": 1}, None, 422, "validation", ["inputs", "messages", "text_inputs"]),
    ([1, 2], None, 422, "validation", ["JSON object"]),
    (tgi(max_new_tokens=0), None, 422, "validation", ["parameters.max_new_tokens", "at least 1", "got 0"]),
    (tgi(max_new_tokens=5000), None, 422, "validation", ["parameters.max_new_tokens", "between 1 and 460", "52-token prompt"]),  # as rendered by the template
    (tgi(max_new_tokens="ten"), None, 422, "validation", ["parameters.max_new_tokens", "integer"]),
    (tgi(temperature=0), None, 422, "validation", ["parameters.temperature", "(0, 100]"]),
    (tgi(top_p=1.5), None, 422, "validation", ["parameters.top_p", "(0, 1]", "1.5"]),
    (tgi(top_k=-1), None, 422, "validation", ["parameters.top_k", "between 0 and"]),
    (tgi(repetition_penalty=0), None, 422, "validation", ["parameters.repetition_penalty", "(0, 100]"]),
    (tgi(seed=-3), None, 422, "validation", ["parameters.seed", "between 0 and"]),
    (tgi(do_sample="yes"), None, 422, "validation", ["parameters.do_sample", "true or false"]),
    (tgi(stop=[f"s{i}" for i in range(33)]), None, 422, "validation", ["parameters.stop", "holds 33", "at most 32"]),
    (tgi(stop=[""]), None, 422, "validation", ["parameters.stop", "non-empty"]),
    (tgi(best_of=2), None, 422, "validation", ["best_of"]),
    (tgi(watermark=True), None, 422, "validation", ["watermark", "not supported"]),
    ({"inputs": "the river " * 400}, None, 422, "validation", ["at most 511 tokens", "given 848"]),
    ({"inputs": ["a", "b"], "stream": True}, None, 422, "validation", ["stream", "single input"]),
    ({"messages": [{"role": "robot", "content": "x"}]}, None, 422, "validation", ["messages[0].role", "robot"]),
    ({"messages": []}, None, 422, "validation", ["messages", "non-empty"]),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, None, 422, "validation",
     ["temperature", "[0, 2]"]),
    ({"messages": [{"role": "user", "content": "x"}], "n": 9}, None, 422, "validation", ["`n`", "between 1 and 8"]),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, None, 422, "validation",
     ["`max_tokens` must be between 1 and", "got 100000"]),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, None, 422, "validation",
     ["tools[0]", '"type": "function"']),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]},
     None, 422, "validation", ["tools", "need a chat model", "instruction template"]),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}, None, 422, "validation",
     ["tool_choice", "no `tools`"]),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}, None, 422, "validation",
     ["top_logprobs", "logprobs: true"]),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}, None, 422, "validation",
     ["response_format.type", "json_schema"]),
    ({"messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]}, None, 422, "validation",
     ["functions", "send `tools`"]),
    ({"prompt": "x", "suffix": "y"}, None, 422, "validation", ["suffix", "fill-in-the-middle"]),
    ({"prompt": "x", "logprobs": 21}, None, 422, "validation", ["logprobs", "between 0 and 20"]),
    ({"prompt": [1, 5, 100000]}, None, 422, "validation", ["prompt[2]", "token id 100000", "vocabulary"]),
    ({"prompt": [[1, 5], "a", {"x": 1}]}, None, 422, "validation", ["prompt[2]", "list of token ids"]),
    ({"prompt": "x", "max_tokens": 0}, None, 422, "validation", ["max_tokens", "at least 1"]),
    ({"prompt": "a red fox", "width": 512, "height": 512}, None, 400, "wrong_model_kind",
     ["`width`", "text-to-image", "serves a language model", "Stable Diffusion"]),
    ({"text_inputs": "x", "num_beams": 4}, None, 422, "validation", ["num_beams", "beam search"]),
    ({"text_inputs": "x", "max_length": 1}, None, 422, "validation", ["max_length", "no room"]),
    # a field the format does not take: named, with the format and the closest known name
    (tgi(max_new_token=4), None, 422, "validation",
     ["`parameters.max_new_token` is not a field of TGI requests", "did you mean `parameters.max_new_tokens`?"]),
    ({"inputs": "x", "paramters": {}}, None, 422, "validation", ["`paramters`", "TGI", "`parameters`?"]),
    ({"inputs": [[{"role": "user", "content": "x"}]], "parameters": {"details": True}}, None, 422, "validation",
     ["`parameters.details` is not a field of Llama-2 dialog requests"]),
    ({"text_inputs": "x", "num_beam": 1}, None, 422, "validation",
     ["`num_beam` is not a field of JumpStart text_inputs requests", "`num_beams`?"]),
    ({"messages": [{"role": "user", "content": "x"}], "max_token": 3}, None, 422, "validation",
     ["`max_token` is not a field of OpenAI chat requests", "`max_tokens`?"]),
    ({"prompt": "x", "guided_json": {}}, None, 422, "validation",
     ["`guided_json` is not a field of OpenAI completions requests", "remove it"]),
    ({"prompt": "x", "logit_bias": {"5": 100}}, None, 422, "validation", ["logit_bias", "not supported"]),
]


@pytest.mark.parametrize("body,content_type,status,error_type,words", CASES,
                         ids=[f"{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_bad_request_gets_status_and_message(causal, body, content_type, status, error_type, words):
    if isinstance(body, bytes):
        response = causal.post(data=body, headers={"Content-Type": content_type})
    else:
        response = causal.post(json=body)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()
    assert set(error) == {"error", "error_type"}
    assert error["error_type"] == error_type
    for word in words:
        assert word in error["error"], (word, error["error"])


def test_body_over_the_limit_is_413(causal):
    body = b'{"inputs": "' + b"a" * (6 * 1024 * 1024 + 10) + b'"}'
    response = causal.post(data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error_type"] == "payload_too_large"
    assert "6 MB" in response.json()["error"]


def test_unknown_route_and_wrong_method_are_json(causal):
    missing = requests.get(causal.url + "/nothing-here", timeout=5)
    assert missing.status_code == 404 and missing.json()["error_type"] == "not_found"
    wrong = requests.get(causal.url + "/invocations", timeout=5)
    assert wrong.status_code == 405 and wrong.json()["error_type"] == "method_not_allowed"


def test_server_keeps_serving_after_bad_requests(causal):
    for body, content_type, *_ in CASES:
        if isinstance(body, bytes):
            causal.post(data=body, headers={"Content-Type": content_type})
    first = causal.post(json=OK)
    assert first.status_code == 200
    assert requests.get(causal.url + "/ping", timeout=5).status_code == 200
    assert causal.post(json=OK).json() == first.json()
