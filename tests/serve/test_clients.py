"""Real client libraries against the server, and streams that add up to the whole answer."""

from __future__ import annotations

import json

import pytest

PROMPT = "Tell me the color of the raven."


def sse_events(response) -> list:
    events = []
    for line in response.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            payload = line[len("data:"):].strip()
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_huggingface_inference_client_as_a_tgi_endpoint(causal, monkeypatch):
    from huggingface_hub import InferenceClient, constants

    # The suite runs with HF_HUB_OFFLINE=1 (no Hub downloads); this client only talks to loopback.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    client = InferenceClient(base_url=causal.url + "/invocations")
    expected = causal.generate(PROMPT, max_new_tokens=10)
    text = client.text_generation(PROMPT, max_new_tokens=10)
    assert text == expected["generated_text"]
    detailed = client.text_generation(PROMPT, max_new_tokens=10, details=True)
    assert detailed.details.generated_tokens == expected["details"]["generated_tokens"]
    assert [t.id for t in detailed.details.tokens] == [t["id"] for t in expected["details"]["tokens"]]
    streamed = list(client.text_generation(PROMPT, max_new_tokens=10, stream=True))
    assert len(streamed) == expected["details"]["generated_tokens"]
    assert "".join(streamed) == expected["generated_text"]
    events = list(client.text_generation(PROMPT, max_new_tokens=10, stream=True, details=True))
    assert events[-1].generated_text == expected["generated_text"]
    assert events[-1].details.finish_reason == expected["details"]["finish_reason"]
    assert all(e.generated_text is None for e in events[:-1])


def test_openai_client_chat_and_completions(causal):
    from openai import OpenAI

    client = OpenAI(base_url=causal.url + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "What color is snow?"}]
    chat = client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=8, temperature=0)
    assert chat.object == "chat.completion"
    content = chat.choices[0].message.content
    assert chat.usage.completion_tokens <= 8 and chat.usage.prompt_tokens > 0
    chunks = list(client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=8,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [chat.choices[0].finish_reason]
    assert chunks[-1].usage.total_tokens == chat.usage.total_tokens
    completion = client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=8, temperature=0)
    streamed = client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == completion.choices[0].text


@pytest.mark.parametrize("params", [{"max_new_tokens": 24},
                                    {"max_new_tokens": 24, "do_sample": True, "seed": 7, "top_k": 100},
                                    {"max_new_tokens": 24, "stop": ["e", "qu"]}])
def test_tgi_stream_concatenates_to_the_whole_answer(causal, params):
    whole = causal.post(json={"inputs": PROMPT, "parameters": dict(params, details=True)}).json()[0]
    response = causal.post(json={"inputs": PROMPT, "parameters": params, "stream": True}, stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(response)
    assert "".join(e["token"]["text"] for e in events) == whole["generated_text"]
    assert [e["token"]["id"] for e in events] == [t["id"] for t in whole["details"]["tokens"]]
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    last = events[-1]
    assert last["generated_text"] == whole["generated_text"]
    assert last["details"]["finish_reason"] == whole["details"]["finish_reason"]
    assert last["details"]["generated_tokens"] == len(events)
    assert last["details"]["seed"] == whole["details"]["seed"]


def test_chat_stream_with_n_choices_ends_with_done(causal):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0, "n": 2}
    whole = causal.post(json=body).json()
    events = sse_events(causal.post(json=dict(body, stream=True), stream=True))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    for choice in whole["choices"]:
        parts = [c["choices"][0]["delta"].get("content", "") for c in chunks
                 if c["choices"][0]["index"] == choice["index"]]
        assert "".join(parts) == choice["message"]["content"]
