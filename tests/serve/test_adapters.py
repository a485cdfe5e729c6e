"""Several LoRA adapters on one base (<model_dir>/adapters/<name>/), chosen per request: OpenAI's
`model`, TGI's `parameters.adapter_id`. On vLLM they are its LoRAs, on the transformers engine
peft adapters kept apart; either way each answer equals peft's own merged model's."""

from __future__ import annotations

import shutil

import pytest
import requests

from tests.serve.conftest import INSTRUCT_BASE, Server, instruction_format, make_adapter, write_metadata
from tests.serve.test_adapter import PROMPT, reference_ids

TOKENS = 10


@pytest.fixture(scope="module")
def adapters_server(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters") / "model"
    shutil.copytree(tiny(INSTRUCT_BASE), folder)
    write_metadata(folder)
    make_adapter(folder / "adapters" / "red", tiny(INSTRUCT_BASE), seed=3)
    make_adapter(folder / "adapters" / "blue", tiny(INSTRUCT_BASE), seed=5, rank=16)
    server = Server(folder, folder.parent / "serve.log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def _ids(answer: dict) -> list[int]:
    return [t["id"] for t in answer["details"]["tokens"]]


def test_each_adapter_answers_as_its_merged_model(adapters_server, tiny):
    folder = adapters_server.model_dir
    answers = {name: adapters_server.generate(PROMPT, max_new_tokens=TOKENS, **({"adapter_id": name} if name else {}))
               for name in ("red", "blue", None)}
    red, blue, base = (_ids(answers[name]) for name in ("red", "blue", None))
    assert len({tuple(base), tuple(red), tuple(blue)}) == 3
    assert red == reference_ids(folder / "adapters" / "red", tiny(INSTRUCT_BASE), TOKENS)[:len(red)]
    assert blue == reference_ids(folder / "adapters" / "blue", tiny(INSTRUCT_BASE), TOKENS)[:len(blue)]
    # OpenAI: `model` names the adapter (any other name: the base), and the answer says which ran
    prompt = requests.post(adapters_server.url + "/tokenize", timeout=10, json={
        "prompt": "<s>" + instruction_format().render_text(PROMPT)}).json()["tokens"]
    for name, adapter in (("red", "red"), ("blue", "blue"), ("tiny-llama", None), ("gpt-4o", None)):
        answer = adapters_server.post("/v1/completions", json={
            "model": name, "prompt": prompt, "max_tokens": TOKENS, "temperature": 0}).json()
        assert answer["model"] == (adapter or "tiny-llama")
        assert answer["choices"][0]["text"] == answers[adapter]["generated_text"]


def test_models_lists_the_adapters_and_unknown_ones_are_refused(adapters_server):
    cards = requests.get(adapters_server.url + "/v1/models", timeout=10).json()["data"]
    assert [c["id"] for c in cards] == ["tiny-llama", "blue", "red"]
    assert all(c["parent"] == "tiny-llama" for c in cards[1:])
    assert requests.get(adapters_server.url + "/v1/models/red", timeout=10).status_code == 200
    assert requests.get(adapters_server.url + "/info", timeout=10).json()["adapters"] == ["blue", "red"]
    wrong = adapters_server.post(json={"inputs": PROMPT, "parameters": {"adapter_id": "green"}})
    assert wrong.status_code == 422
    assert "`parameters.adapter_id` 'green' is not an adapter of this server; its adapters are blue, red" in wrong.text


def test_a_mixed_load_keeps_each_request_on_its_adapter(adapters_server):
    from concurrent.futures import ThreadPoolExecutor

    names = ["red", "blue", None] * 4
    alone = {name: _ids(adapters_server.generate(PROMPT, max_new_tokens=TOKENS, **({"adapter_id": name} if name else {})))
             for name in ("red", "blue", None)}
    with ThreadPoolExecutor(len(names)) as pool:
        together = list(pool.map(lambda name: _ids(adapters_server.generate(
            PROMPT, max_new_tokens=TOKENS, **({"adapter_id": name} if name else {}))), names))
    assert together == [alone[name] for name in names]
