"""Client calls that used to fail, each through the real client library.

openai: top_logprobs, completions logprobs >= 1 and echo over token-id prompts, the developer
role, system_fingerprint, models.retrieve, suffix. huggingface_hub's InferenceClient with the
`<url>/invocations` base URL: chat, health_check, get_endpoint_info. The SageMaker SDK's
serializers: JSON lines answered as JSON when asked, CSV refused, x-text taken as a raw prompt, text-to-image bodies refused.
"""

from __future__ import annotations

import json

import math

import pytest
import requests

PROMPT = "Tell me the color of the raven."
MESSAGES = [{"role": "user", "content": "What color is snow?"}]


@pytest.fixture(scope="module")
def openai_client(causal):
    from openai import OpenAI

    return OpenAI(base_url=causal.url + "/v1", api_key="unused", max_retries=0)


def test_chat_top_logprobs(openai_client):
    chat = openai_client.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=5,
                                                 temperature=0, logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    for item in content:
        assert len(item.top_logprobs) == 3
        values = [t.logprob for t in item.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert item.logprob == pytest.approx(values[0], abs=1e-5)  # greedy: the chosen token is the top one
    stream = openai_client.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=5,
                                                   temperature=0, logprobs=True, top_logprobs=2, stream=True)
    streamed = [c.choices[0].logprobs.content[0] for c in stream if c.choices and c.choices[0].logprobs]
    assert [len(t.top_logprobs) for t in streamed] == [2] * len(content)


def test_completion_logprobs_and_echo_over_token_ids(openai_client, causal):
    ids = requests.post(causal.url + "/tokenize", json={"prompt": PROMPT}, timeout=10).json()["tokens"]
    plain = openai_client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=4, temperature=0,
                                             logprobs=2)
    logprobs = plain.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == 4
    assert all(len(top) <= 3 and max(top.values()) == pytest.approx(lp, abs=1e-5)
               for top, lp in zip(logprobs.top_logprobs, logprobs.token_logprobs))
    echoed = openai_client.completions.create(model="tiny-llama", prompt=[ids], max_tokens=0, echo=True,
                                              logprobs=0, temperature=0)
    choice = echoed.choices[0]
    assert choice.text == PROMPT and echoed.usage.completion_tokens == 0
    assert len(choice.logprobs.token_logprobs) == len(ids)
    assert choice.logprobs.token_logprobs[0] is None  # nothing comes before the first token
    assert all(lp < 0 and math.isfinite(lp) for lp in choice.logprobs.token_logprobs[1:])
    both = openai_client.completions.create(model="tiny-llama", prompt=[ids, ids[:4]], max_tokens=1, echo=True,
                                            logprobs=1, temperature=0)
    assert [len(c.logprobs.tokens) for c in both.choices] == [len(ids) + 1, 5]
    assert both.choices[0].logprobs.token_logprobs[:len(ids)] == pytest.approx(
        [None] + choice.logprobs.token_logprobs[1:], abs=1e-5)


def test_string_prompts_are_tokenized_as_the_tokenizer_does(openai_client, causal, model_dirs):
    """No token added or dropped (this tokenizer adds no BOS of its own), and text_offset gives where
    each echoed token starts in the text, multi-byte characters included."""
    from transformers import AutoTokenizer

    text = "Naïve café: 2+2=4, ok?"
    want = AutoTokenizer.from_pretrained(model_dirs["instruct"])(text, return_offsets_mapping=True)
    ids = want["input_ids"]
    assert requests.post(causal.url + "/tokenize", json={"prompt": text}, timeout=10).json()["tokens"] == ids
    echoed = openai_client.completions.create(model="tiny-llama", prompt=text, max_tokens=1, echo=True,
                                              logprobs=0, temperature=0)
    choice = echoed.choices[0]
    assert echoed.usage.prompt_tokens == len(ids) and choice.text.startswith(text)
    assert choice.logprobs.text_offset == [start for start, _ in want["offset_mapping"]] + [len(text)]
    by_ids = openai_client.completions.create(model="tiny-llama", prompt=ids, max_tokens=1, echo=True, logprobs=0,
                                              temperature=0)
    assert choice.logprobs.token_logprobs == pytest.approx(by_ids.choices[0].logprobs.token_logprobs, abs=1e-5)
    with_bos = requests.post(causal.url + "/v1/completions", timeout=30, json={
        "model": "tiny-llama", "prompt": "<s>" + text, "max_tokens": 1, "echo": True, "logprobs": 0}).json()
    assert with_bos["usage"]["prompt_tokens"] == len(ids) + 1  # a BOS written in the text is the special token


def test_developer_role_is_a_system_message(openai_client):
    as_developer = openai_client.chat.completions.create(
        model="tiny-llama", max_tokens=6, temperature=0,
        messages=[{"role": "developer", "content": "Answer briefly."}, *MESSAGES])
    as_system = openai_client.chat.completions.create(
        model="tiny-llama", max_tokens=6, temperature=0,
        messages=[{"role": "system", "content": "Answer briefly."}, *MESSAGES])
    assert as_developer.choices[0].message.content == as_system.choices[0].message.content
    assert as_developer.usage.prompt_tokens == as_system.usage.prompt_tokens


def test_system_fingerprint_is_a_string(openai_client, causal, monkeypatch):
    from huggingface_hub import InferenceClient, constants

    chat = openai_client.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=3)
    assert isinstance(chat.system_fingerprint, str) and chat.system_fingerprint.startswith("tuneforge-")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    output = InferenceClient(base_url=causal.url).chat_completion(MESSAGES, max_tokens=3)
    assert output.system_fingerprint == chat.system_fingerprint


def test_models_retrieve(openai_client):
    model = openai_client.models.retrieve("tiny-llama")
    assert model.id == "tiny-llama" and model.owned_by == "tuneforge"
    from openai import NotFoundError

    with pytest.raises(NotFoundError, match="'gpt-4' is not served here"):
        openai_client.models.retrieve("gpt-4")


def test_suffix_is_refused_with_a_reason(openai_client):
    from openai import UnprocessableEntityError

    with pytest.raises(UnprocessableEntityError, match="`suffix` is not supported: fill-in-the-middle"):
        openai_client.completions.create(model="tiny-llama", prompt="def f(", suffix="return x", max_tokens=4)


def test_inference_client_with_the_invocations_base_url(causal, monkeypatch):
    from huggingface_hub import InferenceClient, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    client = InferenceClient(base_url=causal.url + "/invocations")
    chat = client.chat_completion(MESSAGES, max_tokens=6, temperature=0)  # POST /invocations/v1/chat/completions
    direct = causal.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 6, "temperature": 0})
    assert chat.choices[0].message.content == direct.json()["choices"][0]["message"]["content"]
    streamed = list(client.chat_completion(MESSAGES, max_tokens=6, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == chat.choices[0].message.content
    # health_check and get_endpoint_info are for hf-inference endpoints, given by URL
    endpoint = InferenceClient(model=causal.url + "/invocations", provider="hf-inference")
    assert endpoint.health_check() is True
    expected = causal.generate(PROMPT, max_new_tokens=3)["generated_text"]
    assert endpoint.text_generation(PROMPT, max_new_tokens=3) == expected
    info = endpoint.get_endpoint_info()
    assert info["model_id"] == "tiny-llama" and info["max_input_tokens"] == 511
    assert info["max_total_tokens"] == 512 and info["max_stop_sequences"] == 32


def test_inference_client_and_tgi_json_formats_follow_the_schema(causal, monkeypatch):
    """huggingface_hub sends a json_schema format as {"type": "json_object", "value": schema}, TGI's
    grammar as {"type": "json", "value": schema}: both must constrain the answer to the schema."""
    from huggingface_hub import InferenceClient, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    schema = {"type": "object", "properties": {"team": {"type": "string", "enum": ["billing", "shipping"]},
                                               "urgent": {"type": "boolean"}},
              "required": ["team", "urgent"], "additionalProperties": False}
    client = InferenceClient(base_url=causal.url)
    hub = client.chat_completion(MESSAGES, max_tokens=40, temperature=0, response_format={
        "type": "json_schema", "json_schema": {"name": "ticket", "schema": schema}})
    value = json.loads(hub.choices[0].message.content)
    assert set(value) == {"team", "urgent"} and value["team"] in ("billing", "shipping")
    tgi = causal.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 40, "temperature": 0,
                                                    "response_format": {"type": "json", "value": schema}})
    assert tgi.status_code == 200, tgi.text
    assert json.loads(tgi.json()["choices"][0]["message"]["content"]) == value
    bad = causal.post("/v1/chat/completions", json={"messages": MESSAGES, "response_format": {"type": "json",
                                                                                           "value": "x"}})
    assert bad.status_code == 422 and "response_format.value" in bad.text


def test_responses_api_answers_as_chat_does(openai_client, causal):
    """client.responses.create: the same greedy answer as the chat route for the same messages."""
    import openai

    response = openai_client.responses.create(model="tiny-llama", input="Say hello.", instructions="Be brief.",
                                              max_output_tokens=6, temperature=0)
    chat = openai_client.chat.completions.create(
        model="tiny-llama", max_tokens=6, temperature=0,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}])
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.usage.output_tokens == chat.usage.completion_tokens
    assert response.status == ("incomplete" if chat.choices[0].finish_reason == "length" else "completed")
    # a list of messages with text parts, as the SDK sends a conversation
    parts = openai_client.responses.create(model="tiny-llama", max_output_tokens=6, temperature=0, input=[
        {"role": "system", "content": [{"type": "input_text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}])
    assert parts.output_text == response.output_text
    with pytest.raises(openai.UnprocessableEntityError, match="previous_response_id"):
        openai_client.responses.create(model="tiny-llama", input="x", previous_response_id="resp_1")
    with pytest.raises(openai.UnprocessableEntityError, match="streaming Responses"):
        openai_client.responses.create(model="tiny-llama", input="x", stream=True)


def _predictor(server, monkeypatch, serializer, deserializer):
    from sagemaker.local import LocalSession, local_session
    from sagemaker.predictor import Predictor

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(local_session, "get_docker_host", lambda: "127.0.0.1")
    session = LocalSession()
    session.config = {"local": {"local_code": True, "serving_port": server.port}}
    return Predictor("tuneforge-llm", sagemaker_session=session, serializer=serializer, deserializer=deserializer)


def test_sagemaker_serializers_and_accept(causal, monkeypatch):
    from sagemaker.deserializers import CSVDeserializer, JSONDeserializer
    from sagemaker.serializers import IdentitySerializer, JSONLinesSerializer, JSONSerializer

    records = [{"inputs": PROMPT, "parameters": {"max_new_tokens": 3}},
               {"inputs": "hi", "parameters": {"max_new_tokens": 2}}]
    answers = _predictor(causal, monkeypatch, JSONLinesSerializer(), JSONDeserializer()).predict(records)
    assert answers == [causal.post(json=record).json() for record in records]  # a JSON array, in order
    # The SDK's local runtime client returns error bodies instead of raising (SageMaker raises
    # ModelError with the same body); the status codes are checked in test_errors/test_hardening.
    refused = _predictor(causal, monkeypatch, JSONLinesSerializer(), CSVDeserializer()).predict(records)
    assert "cannot answer with Accept: text/csv" in ",".join(sum(refused, []))
    raw_text = IdentitySerializer("application/x-text")  # JumpStart's raw-text prompt
    answer = _predictor(causal, monkeypatch, raw_text, JSONDeserializer()).predict(PROMPT.encode())
    assert answer == causal.post(data=PROMPT, headers={"Content-Type": "text/plain"}).json()
    image = _predictor(causal, monkeypatch, JSONSerializer(), JSONDeserializer()).predict(
        {"prompt": "a fox", "width": 64, "height": 64})
    assert image["error_type"] == "wrong_model_kind"


def test_many_stop_sequences_are_accepted(openai_client):
    stops = ["\n\n", "Q:", "###", "def ", "class ", "if __name__", "print("]  # lm-eval code tasks send 5+
    chat = openai_client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=4, stop=stops)
    assert chat.choices[0].finish_reason in ("stop", "length")
