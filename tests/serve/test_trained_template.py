"""Chat and plain-text requests reach a fine-tune through the template it was trained on.

An instruction (or table) fine-tune never saw a chat template: a single user turn, and a plain
string that is not already a whole prompt, are rendered through the saved prompt_template, so
they give exactly the ids training gave the same question. A chat fine-tune keeps its chat
template; a folder without tuneforge.json keeps the tokenizer's (or the default) one.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.serve.conftest import Server, instruction_format, write_metadata
from tuneforge.data.prompt import DEFAULT_CHAT_TEMPLATE, DEMARCATION_KEY, PromptFormat, encode_prompt, render_chat
from tuneforge.serve.loader import LoadedModel, check_model_dir
from tuneforge.serve.payloads import Parser, PayloadError
from tuneforge.serve.settings import ServeSettings

QUESTION = "What color is the banana?"
# A chat template unlike tuneforge's default, as a chat fine-tune saves it in tuneforge.json.
CHAT_TEMPLATE = ("{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] + '\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}")


def parser_for(folder) -> Parser:
    """The server's Parser on the folder's real tokenizer and tuneforge.json (no weights needed)."""
    from transformers import AutoTokenizer

    settings = ServeSettings(model_dir=folder)
    info = check_model_dir(settings)
    loaded = LoadedModel(info=info, model=None, tokenizer=AutoTokenizer.from_pretrained(folder), seq2seq=False,
                         device="cpu", max_input_tokens=511, max_total_tokens=512, default_max_new_tokens=16)
    return Parser(loaded, settings)


def model_folder(tmp_path, tiny, name: str, metadata: bool = True, **overrides):
    """The tiny llama with a tuneforge.json (an instruction fine-tune unless overridden)."""
    folder = tmp_path / name
    shutil.copytree(tiny("llama"), folder)
    if metadata:
        write_metadata(folder, **overrides)
    return folder


def ids_of(parser: Parser, body, route: str = "invocations") -> list[int]:
    invocation = parser.parse(body, route)
    assert len(invocation.requests) == 1
    return invocation.requests[0].prompt_ids


@pytest.fixture
def instruct(tmp_path, tiny) -> Parser:
    return parser_for(model_folder(tmp_path, tiny, "instruct"))


def test_a_user_turn_to_an_instruction_fine_tune_gets_the_ids_training_gave(instruct):
    trained = encode_prompt(instruct.tokenizer, instruction_format().render_prompt(
        {"instruction": QUESTION, "context": ""}), seq2seq=False)
    chat = ids_of(instruct, {"messages": [{"role": "user", "content": QUESTION}]}, "chat")
    assert chat == trained
    assert ids_of(instruct, {"inputs": {"instruction": QUESTION}}) == trained
    assert ids_of(instruct, {"inputs": [[{"role": "user", "content": QUESTION}]]}) == trained  # Llama-2 dialogs
    # before: tuneforge's default <|user|> template, which this model never saw
    default = render_chat(instruct.tokenizer, [{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                          chat_template=DEFAULT_CHAT_TEMPLATE)
    assert chat != encode_prompt(instruct.tokenizer, default, seq2seq=False)
    assert instruct.parse({"messages": [{"role": "user", "content": QUESTION}]}, "chat").prompt_texts[0] \
        .endswith(f"### Instruction:\n{QUESTION}\n\n### Input:\n\n\n### Response:\n")


def test_a_system_turn_goes_before_the_user_content(instruct):
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}]
    text = instruct.parse({"messages": messages}, "chat").prompt_texts[0]
    assert text == instruction_format().render_prompt({"instruction": "Answer briefly.\n\n" + QUESTION,
                                                       "context": ""})
    empty = [{"role": "system", "content": ""}, {"role": "user", "content": QUESTION}]
    assert ids_of(instruct, {"messages": empty}, "chat") == ids_of(instruct, {"inputs": {"instruction": QUESTION}})


@pytest.mark.parametrize("messages, roles", [
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
      {"role": "user", "content": QUESTION}], "user, assistant, user"),
    ([{"role": "system", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}],
     "system, system, user"),
    ([{"role": "system", "content": "a"}], "system"),
    ([{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "The"}], "user, assistant"),
])
def test_a_conversation_to_an_instruction_fine_tune_is_422(instruct, messages, roles):
    with pytest.raises(PayloadError) as caught:
        instruct.parse({"messages": messages}, "chat")
    assert caught.value.status == 422
    assert caught.value.message == (
        f"`messages` does not fit this model: this model was fine-tuned on single prompts (instruction data), "
        f"so it takes one user message, optionally after one system message; got the roles [{roles}]. "
        "Send the conversation as one user message, or the prompt fields as `inputs`")


def test_plain_strings_are_rendered_unless_they_already_are_a_whole_prompt(instruct):
    trained = ids_of(instruct, {"inputs": {"instruction": QUESTION}})
    assert ids_of(instruct, {"inputs": QUESTION}) == trained  # TGI / JumpStart
    assert ids_of(instruct, QUESTION) == trained  # text/plain or a JSON string body
    assert ids_of(instruct, {"text_inputs": QUESTION}) == trained
    whole = instruction_format().render_prompt({"instruction": QUESTION, "context": "A river."})
    assert ids_of(instruct, {"inputs": whole}) == encode_prompt(instruct.tokenizer, whole, seq2seq=False)
    # the client wrote its own prompt ending in the demarcation (JumpStart notebooks do): kept as sent
    own = f"Question: {QUESTION}\n\n### Response:\n"
    assert ids_of(instruct, {"inputs": own}) == encode_prompt(instruct.tokenizer, own, seq2seq=False)
    # OpenAI completions prompts are always raw text, tokenized as the tokenizer does it
    assert ids_of(instruct, {"prompt": QUESTION}, "completion") == instruct.tokenizer(QUESTION)["input_ids"]


def test_a_table_fine_tune_renders_strings_and_chat_with_its_demarcation(tmp_path, tiny):
    table = PromptFormat(kind="table", prompt_template="{input}", completion_template="{output}",
                         demarcation=DEMARCATION_KEY)
    parser = parser_for(model_folder(tmp_path, tiny, "table", prompt=table.to_dict(), data_format="table"))
    trained = encode_prompt(parser.tokenizer, QUESTION + DEMARCATION_KEY, seq2seq=False)
    assert ids_of(parser, {"messages": [{"role": "user", "content": QUESTION}]}, "chat") == trained
    assert ids_of(parser, {"inputs": QUESTION}) == trained
    assert ids_of(parser, {"inputs": QUESTION + DEMARCATION_KEY}) == trained  # not a second demarcation


def test_a_chat_fine_tune_keeps_its_chat_template(tmp_path, tiny):
    fmt = PromptFormat(kind="chat", prompt_template="", completion_template="", chat_template=CHAT_TEMPLATE)
    parser = parser_for(model_folder(tmp_path, tiny, "chat", prompt=fmt.to_dict(), data_format="chat"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": QUESTION}]
    text = parser.parse({"messages": messages}, "chat").prompt_texts[0]
    assert text == f"[system] Be brief.\n[user] Hi\n[assistant] Hello\n[user] {QUESTION}\n[assistant] "
    assert ids_of(parser, {"messages": messages}, "chat") == encode_prompt(parser.tokenizer, text, seq2seq=False)
    assert ids_of(parser, {"inputs": QUESTION}) == encode_prompt(parser.tokenizer, QUESTION, seq2seq=False)


def test_a_folder_without_metadata_keeps_the_default_chat_template(tmp_path, tiny):
    parser = parser_for(model_folder(tmp_path, tiny, "plain", metadata=False))
    messages = [{"role": "user", "content": QUESTION}]
    text = parser.parse({"messages": messages}, "chat").prompt_texts[0]
    assert text == f"<|user|>\n{QUESTION}</s>\n<|assistant|>\n"  # the tiny tokenizer has no template of its own
    assert ids_of(parser, {"inputs": QUESTION}) == encode_prompt(parser.tokenizer, QUESTION, seq2seq=False)


LEARN = {"instruction_tuned": "True", "peft_type": "none", "epoch": "8", "learning_rate": "0.003",
         "per_device_train_batch_size": "16", "rouge_samples": "0"}  # as tests/e2e/test_train_then_serve.py


def training_ids(job, tmp_path, question: str) -> list[int]:
    """The prompt ids training builds for a row holding only this question: the job's own reader,
    template and encode_prompt."""
    from transformers import AutoTokenizer

    from tuneforge.config import parse_hyperparameters
    from tuneforge.data.formats import read_channel

    folder = tmp_path / "one-row"
    folder.mkdir(exist_ok=True)
    (folder / "row.jsonl").write_text(json.dumps({"instruction": question, "context": "", "response": "-"}) + "\n")
    saved = PromptFormat.from_dict(json.loads((job.model_dir / "tuneforge.json").read_text())["prompt"])
    data = read_channel(folder, parse_hyperparameters(LEARN), prompt=saved, fmt="instruction")
    return encode_prompt(AutoTokenizer.from_pretrained(job.model_dir), data.examples[0].prompt, seq2seq=False)


@pytest.mark.slow
def test_a_trained_instruction_model_answers_chat_as_it_answers_its_instruction_format(job, tiny, tmp_path):
    from tuneforge.samples import ITEMS

    job.add_model(tiny("llama"))
    job.add_sample_data("instruction")
    job.hyperparameters(LEARN)
    assert job.run_in_process() == 0
    assert json.loads((job.model_dir / "tuneforge.json").read_text())["prompt"]["kind"] == "instruction"
    server = Server(job.model_dir, tmp_path / "serve.log").wait_ready()
    try:
        right = 0
        for item, color in sorted(ITEMS.items()):
            question = f"What color is the {item}?"
            trained = training_ids(job, tmp_path, question)
            fields = server.post(json={"inputs": {"instruction": question}, "parameters": {
                "max_new_tokens": 12, "details": True, "decoder_input_details": True}})
            assert fields.status_code == 200, fields.text
            assert [t["id"] for t in fields.json()[0]["details"]["prefill"]] == trained
            answer = fields.json()[0]["generated_text"]
            chat = server.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": question}], "max_tokens": 12, "temperature": 0})
            assert chat.status_code == 200, chat.text
            assert chat.json()["usage"]["prompt_tokens"] == len(trained)
            assert chat.json()["choices"][0]["message"]["content"] == answer, item
            plain = server.post(json={"inputs": question, "parameters": {"max_new_tokens": 12}})
            assert plain.json()[0]["generated_text"] == answer, item
            right += answer.strip() == f"The {item} is {color}."
        assert right >= len(ITEMS) // 2, f"only {right} of {len(ITEMS)} answers right: the model did not learn"
        multi = server.post("/v1/chat/completions", json={"messages": [
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "What color is the lime?"}], "max_tokens": 4})
        assert multi.status_code == 422
        error = multi.json()["error"]  # OpenAI's error shape on /v1 routes
        assert error["type"] == "validation" and error["code"] == 422
        assert "takes one user message, optionally after one system message" in error["message"]
    finally:
        assert server.stop() == 0


def test_validate_returns_the_error_instead_of_raising(tmp_path, tiny):
    """Parser.validate is the one step a body goes through, as TGI's: the Invocation, or the
    PayloadError that refuses the request, returned."""
    from tuneforge.serve.invocation import Invocation

    parser = parser_for(model_folder(tmp_path, tiny, "plain", metadata=False))
    refused = parser.validate({"inputs": "hi", "parameters": {"watermark": True}})
    assert isinstance(refused, PayloadError) and refused.status == 422
    assert refused.message == "`parameters.watermark` is not supported by this server; leave it unset"
    assert isinstance(parser.validate([1, 2]), PayloadError)
    taken = parser.validate({"inputs": "hi", "parameters": {"max_new_tokens": 2}}, "generate")
    assert isinstance(taken, Invocation) and taken.requests[0].max_new_tokens == 2
    with pytest.raises(PayloadError, match="fill-in-the-middle"):
        parser.parse({"prompt": "x", "suffix": "y"}, "completion")
