"""Every request format on a real gunicorn server, answered in its own shape."""

from __future__ import annotations

import json

from tests.serve.conftest import instruction_format

PROMPT = "What color is the banana?"


def test_ping_is_503_until_the_model_is_loaded_then_200(causal, seq2seq):
    for server in (causal, seq2seq):
        statuses = server.ping_statuses
        assert 503 in statuses, statuses
        first_ok = statuses.index(200)
        assert all(s == 503 for s in statuses[:first_ok])
        response = __import__("requests").get(server.url + "/ping", timeout=5)
        assert response.status_code == 200
        assert response.json() == {"status": "ready"}


def test_tgi_format_returns_a_list_with_generated_text_and_details(causal):
    response = causal.post(json={"inputs": PROMPT, "parameters": {"max_new_tokens": 6, "details": True}})
    assert response.status_code == 200
    assert response.headers["x-prompt-tokens"] == str(len(_ids(causal, PROMPT)))
    body = response.json()
    assert isinstance(body, list) and len(body) == 1
    item = body[0]
    assert set(item) == {"generated_text", "details"}
    details = item["details"]
    assert details["finish_reason"] in ("length", "eos_token")
    assert details["generated_tokens"] == len(details["tokens"])
    assert details["seed"] is None  # greedy
    if details["finish_reason"] == "length":
        assert details["generated_tokens"] == 6
    assert "".join(t["text"] for t in details["tokens"]) == item["generated_text"]
    for token in details["tokens"]:
        assert set(token) == {"id", "text", "logprob", "special"}
        assert token["logprob"] <= 0


def test_tgi_without_details_and_with_a_list_of_inputs(causal):
    single = causal.post(json={"inputs": PROMPT, "parameters": {"max_new_tokens": 5}}).json()
    assert list(single[0]) == ["generated_text"]
    batch = causal.post(json={"inputs": [PROMPT, "hi there"], "parameters": {"max_new_tokens": 5}}).json()
    assert len(batch) == 2
    assert batch[0] == single[0]  # a list answers each input as if alone (greedy)


def test_generate_route_returns_the_bare_object(causal):
    body = causal.post("/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 5}}).json()
    listed = causal.post("/", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 5}}).json()
    assert isinstance(body, dict) and body == listed[0]


def test_return_full_text_prepends_the_prompt(causal):
    plain = causal.generate(PROMPT, max_new_tokens=5)["generated_text"]
    full = causal.post(json={"inputs": PROMPT, "parameters": {"max_new_tokens": 5, "return_full_text": True}})
    assert full.json()[0]["generated_text"] == instruction_format().render_text(PROMPT) + plain


def test_structured_inputs_use_the_saved_template(causal):
    row = {"instruction": "Name the color of the lime.", "context": "Limes grow on trees."}
    rendered = instruction_format().render_prompt(row)
    assert rendered.startswith("Below is an instruction") and rendered.endswith("### Response:\n")
    via_fields = causal.generate(row, max_new_tokens=8)
    via_text = causal.generate(rendered, max_new_tokens=8)
    assert via_fields["details"]["tokens"] == via_text["details"]["tokens"]
    full = causal.post(json={"inputs": row, "parameters": {"max_new_tokens": 3, "return_full_text": True}}).json()
    assert full[0]["generated_text"].startswith(rendered)
    # a field the template does not have is an error naming the template's fields
    bad = causal.post(json={"inputs": {"question": "x"}})
    assert bad.status_code == 422
    assert "instruction" in bad.json()["error"] and "context" in bad.json()["error"]


def test_stop_sequences_cut_the_text(causal):
    full = causal.generate(PROMPT, max_new_tokens=20)["generated_text"]
    stop = full[6:9]
    cut = full[:full.find(stop)]
    answer = causal.generate(PROMPT, max_new_tokens=20, stop=[stop])
    assert answer["generated_text"] == cut
    assert answer["details"]["finish_reason"] == "stop_sequence"
    assert answer["details"]["generated_tokens"] < 20
    # OpenAI spelling: a single string
    # completions prompts are raw, tokenized as the tokenizer does: this one adds no BOS of its own
    chat = causal.post("/v1/completions", json={"prompt": "<s>" + instruction_format().render_text(PROMPT),
                                                "max_tokens": 20, "temperature": 0, "stop": stop})
    assert chat.json()["choices"][0]["text"] == cut
    assert chat.json()["choices"][0]["finish_reason"] == "stop"


def test_a_fixed_seed_repeats_and_another_seed_differs(causal):
    params = {"max_new_tokens": 12, "do_sample": True, "temperature": 1.0, "top_k": 200, "top_p": 0.99}
    first = causal.generate(PROMPT, seed=1234, **params)
    again = causal.generate(PROMPT, seed=1234, **params)
    other = causal.generate(PROMPT, seed=99, **params)
    assert first["details"]["seed"] == 1234
    assert first["generated_text"] == again["generated_text"]
    assert [t["id"] for t in first["details"]["tokens"]] != [t["id"] for t in other["details"]["tokens"]]
    unseeded = causal.generate(PROMPT, **params)
    assert isinstance(unseeded["details"]["seed"], int)  # the seed it drew is reported


def test_llama2_dialog_format(causal):
    dialogs = [[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Color of snow?"}],
               [{"role": "user", "content": "Color of coal?"}]]
    response = causal.post(json={"inputs": dialogs, "parameters": {"max_new_tokens": 6}})
    assert response.status_code == 200
    body = response.json()
    assert len(body) == 2
    for item in body:
        assert list(item) == ["generation"]
        assert item["generation"]["role"] == "assistant"
        assert isinstance(item["generation"]["content"], str)
    # the dialog is rendered with the chat template, as an OpenAI request with the same messages
    chat = causal.post("/v1/chat/completions", json={"messages": dialogs[1], "max_tokens": 6, "temperature": 0})
    assert chat.json()["choices"][0]["message"]["content"] == body[1]["generation"]["content"]


def test_openai_chat_completion_shape(causal):
    response = causal.post("/invocations", json={
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "max_tokens": 7, "temperature": 0, "n": 2, "logprobs": True})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny-llama"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    first = body["choices"][0]
    assert first["message"]["role"] == "assistant"
    assert first["finish_reason"] in ("stop", "length")
    assert body["choices"][1]["message"] == first["message"]  # greedy: both choices alike
    usage = body["usage"]
    tokens = len(first["logprobs"]["content"])
    assert usage["completion_tokens"] == 2 * tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] == int(response.headers["x-prompt-tokens"])


def test_openai_completions_shape_with_echo_and_lists(causal):
    body = causal.post("/v1/completions", json={"prompt": [PROMPT, "hi"], "max_tokens": 4, "temperature": 0,
                                                "echo": True}).json()
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["text"].startswith(PROMPT)
    assert body["choices"][1]["text"].startswith("hi")
    assert body["usage"]["completion_tokens"] <= 8


def test_models_and_info(causal):
    import requests

    models = requests.get(causal.url + "/v1/models", timeout=5).json()
    assert models["data"][0]["id"] == "tiny-llama"
    info = requests.get(causal.url + "/info", timeout=5).json()
    assert info["architecture"] == "causal" and info["prompt_kind"] == "instruction"
    assert info["max_input_tokens"] == 511 and info["max_total_tokens"] == 512


def test_plain_text_bodies_are_bare_prompts(causal):
    expected = causal.generate(PROMPT)["generated_text"]  # default max_new_tokens, greedy
    for content_type in ("text/plain", "text/plain; charset=utf-8"):
        response = causal.post(data=PROMPT.encode(), headers={"Content-Type": content_type})
        assert response.status_code == 200, response.text
        assert response.json() == {"generated_text": expected}


def test_json_lines_answer_one_line_per_request(causal):
    lines = [{"inputs": PROMPT, "parameters": {"max_new_tokens": 4}},
             {"inputs": "hi", "parameters": {"max_new_tokens": 3}},
             {"messages": [{"role": "user", "content": "hey"}], "max_tokens": 3, "temperature": 0}]
    body = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    response = causal.post(data=body, headers={"Content-Type": "application/jsonlines"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/jsonlines")
    answers = [json.loads(line) for line in response.text.splitlines()]
    assert len(answers) == 3
    assert answers[0] == causal.post(json=lines[0]).json()
    assert answers[2]["object"] == "chat.completion"
    bad = causal.post(data='{"inputs": "a"}\n{"inputs": ', headers={"Content-Type": "application/jsonlines"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("line 2: malformed JSON")


def test_a_long_json_lines_body_runs_in_waves(causal):
    lines = [{"inputs": f"item {i}", "parameters": {"max_new_tokens": 2}} for i in range(150)]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    response = causal.post(data=body, headers={"Content-Type": "application/jsonlines"})
    assert response.status_code == 200, response.text
    answers = [json.loads(line) for line in response.text.splitlines()]
    assert len(answers) == 150
    assert answers[7] == causal.post(json=lines[7]).json()


def test_execution_parameters_for_batch_transform(causal):
    import requests

    body = requests.get(causal.url + "/execution-parameters", timeout=5).json()
    assert body == {"MaxConcurrentTransforms": 16, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
    assert body["MaxConcurrentTransforms"] * body["MaxPayloadInMB"] <= 100


def test_flan_t5_text_inputs_on_a_seq2seq_folder_without_metadata(seq2seq):
    body = seq2seq.post(json={"text_inputs": "Translate to German: hello", "max_length": 6,
                              "num_return_sequences": 3, "do_sample": True, "top_k": 50, "top_p": 0.95,
                              "seed": 5}).json()
    assert list(body) == ["generated_texts"]
    assert len(body["generated_texts"]) == 3 and all(isinstance(t, str) for t in body["generated_texts"])
    again = seq2seq.post(json={"text_inputs": "Translate to German: hello", "max_length": 6,
                               "num_return_sequences": 3, "do_sample": True, "top_k": 50, "top_p": 0.95,
                               "seed": 5}).json()
    assert again == body
    listed = seq2seq.post(json={"text_inputs": ["a", "b"], "max_length": 4}).json()
    assert len(listed["generated_texts"]) == 2 and all(len(x) == 1 for x in listed["generated_texts"])
    # max_length counts the decoder start token, as in transformers: 4 -> at most 3 new tokens
    tgi = seq2seq.generate("a", max_new_tokens=3)
    assert listed["generated_texts"][0][0] == tgi["generated_text"]
    info = __import__("requests").get(seq2seq.url + "/info", timeout=5).json()
    assert info["architecture"] == "seq2seq" and info["prompt_kind"] == "domain"


def _ids(server, text):
    from transformers import AutoTokenizer

    from tuneforge.data.prompt import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(server_model_dir(server))
    return encode_prompt(tokenizer, instruction_format().render_text(text), seq2seq=False)


def server_model_dir(server):
    args = server.proc.args
    return args[args.index("--model-dir") + 1]
