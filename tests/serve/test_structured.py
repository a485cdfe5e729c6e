"""Structured output and tool calls through the openai client, on a tiny random model.

A random model would ramble; constrained decoding (outlines-core) must still give an object
that parses and validates, within max_tokens, every time.
"""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import pytest
from pydantic import BaseModel

from tuneforge.data.prompt import encode_prompt

MODEL = "chat"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Today's weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"]}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 6},
                                                    "hour24": {"type": "boolean"}},
                   "required": ["zone", "hour24"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class Pet(BaseModel):
    name: str
    legs: int
    kind: Literal["cat", "dog", "bird"]
    vaccinated: bool


@pytest.fixture(scope="module")
def client(chat_server):
    from openai import OpenAI

    return OpenAI(base_url=chat_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_parse_with_a_pydantic_model_returns_a_valid_object(client):
    for seed in range(3):  # sampled: different paths through the schema, each must complete
        completion = client.chat.completions.parse(model=MODEL, messages=ASK, response_format=Pet, max_tokens=40,
                                                   seed=seed, temperature=1.0)
        pet = completion.choices[0].message.parsed
        assert isinstance(pet, Pet), completion.choices[0].message.content
        assert completion.choices[0].finish_reason == "stop"


def test_json_object_is_always_parseable(client):
    for seed, budget in [(0, 12), (1, 25), (2, 60), (3, 8)]:
        chat = client.chat.completions.create(model=MODEL, messages=ASK, response_format={"type": "json_object"},
                                              max_tokens=budget, seed=seed, temperature=1.0)
        text = chat.choices[0].message.content
        assert isinstance(json.loads(text), dict), text
        assert chat.usage.completion_tokens <= budget


def test_too_few_tokens_for_the_schema_is_refused(client):
    from openai import UnprocessableEntityError

    with pytest.raises(UnprocessableEntityError, match="shortest answer the requested format allows takes"):
        client.chat.completions.parse(model=MODEL, messages=ASK, response_format=Pet, max_tokens=3)


def test_a_named_tool_call_round_trips(client, chat_server):
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, CLOCK], max_tokens=30,
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    # The caller runs the tool and sends the call and its result back; the template renders both.
    history = ASK + [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER, CLOCK],
                                            tool_choice="none", max_tokens=5, temperature=0)
    assert second.choices[0].message.content is not None and not second.choices[0].message.tool_calls
    assert second.usage.prompt_tokens == len(_ids(chat_server, history, [WEATHER, CLOCK], arguments))


def _ids(server, history, tools, arguments) -> list[int]:
    """The prompt as transformers renders it from the chat template, arguments as an object."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(server.model_dir)
    messages = [dict(m) for m in history]
    messages[1]["tool_calls"] = [dict(c, function=dict(c["function"], arguments=arguments))
                                 for c in messages[1]["tool_calls"]]
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert "<tool_response>sunny, 21 C</tool_response>" in text and '"name": "get_weather"' in text
    return encode_prompt(tokenizer, text, seq2seq=False)


def test_required_tool_choice_calls_one_of_the_tools(client):
    for seed in range(3):
        chat = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, CLOCK],
                                              tool_choice="required", max_tokens=40, seed=seed, temperature=1.0)
        call = chat.choices[0].message.tool_calls[0]
        schema = {"get_weather": WEATHER, "get_time": CLOCK}[call.function.name]["function"]["parameters"]
        jsonschema.validate(json.loads(call.function.arguments), schema)


def test_a_streamed_tool_call_arrives_as_one_delta(client):
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[CLOCK], max_tokens=30, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_time"}}))
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert len(calls) == 1 and calls[0][0].function.name == "get_time"
    jsonschema.validate(json.loads(calls[0][0].function.arguments), CLOCK["function"]["parameters"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_auto_tool_choice_answers_text_or_a_call(client):
    chat = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], max_tokens=8, temperature=0)
    message = chat.choices[0].message
    assert (message.content is not None) != bool(message.tool_calls)


def test_tgi_grammar_through_the_inference_client(chat_server, monkeypatch):
    import re

    from huggingface_hub import InferenceClient, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    client = InferenceClient(base_url=chat_server.url)
    text = client.text_generation("A pet:", max_new_tokens=40, do_sample=True, seed=1,
                                  grammar={"type": "json", "value": Pet.model_json_schema()})
    assert isinstance(Pet.model_validate_json(text), Pet)
    code = client.text_generation("A code:", max_new_tokens=10, grammar={"type": "regex", "value": "[A-Z]{3}-[0-9]{2}"})
    assert re.fullmatch("[A-Z]{3}-[0-9]{2}", code)
