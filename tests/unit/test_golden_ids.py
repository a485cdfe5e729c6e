"""Exact token ids and labels for every data format, and the serving side's ids for the same prompt.

Expected ids are built here from the tokenizer on the hand-written pieces, not from tuneforge's
own encoding functions, so a change in the layout (a second BOS, a missing EOS, a shifted mask)
fails. The serving side goes through the real payload parser with the PromptFormat that training
saves (round-tripped through its dict, as in model/tuneforge.json).
"""

import json
from types import SimpleNamespace

import pytest

from tuneforge.config import parse_hyperparameters
from tuneforge.data import read_channel, tokenize_examples
from tuneforge.data.formats import Example
from tuneforge.data.prompt import PromptFormat
from tuneforge.serve.payloads import Parser
from tuneforge.serve.settings import ServeSettings

X = -100
BOS, EOS = 1, 2
RESPONSE = "\n\n### Response:\n"
# A Llama-2-style template that writes {{ bos_token }} itself, as Llama 2, Mistral and Gemma do.
BOS_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
                "{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ ' ' + m['content'] + ' ' + eos_token }}"
                "{% endif %}{% endfor %}")


def cfg(**values):
    return parse_hyperparameters({k: str(v) for k, v in values.items()})


@pytest.fixture(scope="module")
def tok(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny("llama"))
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.chat_template) == (BOS, EOS, None)
    return tokenizer


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def served(tokenizer, prompt_format, body, *, seq2seq=False):
    """The prompt ids the server builds for `body`."""
    loaded = SimpleNamespace(tokenizer=tokenizer, seq2seq=seq2seq, max_input_tokens=4096, max_total_tokens=None,
                             default_max_new_tokens=8,
                             info=SimpleNamespace(name="tiny", adapters={},
                                                  prompt=PromptFormat.from_dict(prompt_format.to_dict())))
    return Parser(loaded, ServeSettings(model_dir="/nonexistent")).parse(body).requests[0].prompt_ids


def trained(tokenizer, data, *, seq2seq=False, max_len=256):
    tokens = tokenize_examples(data.examples, tokenizer, data.prompt, max_len=max_len, max_out=64, seq2seq=seq2seq)
    assert tokens.truncated == 0
    return tokens.features


def test_instruction_with_template_json(tmp_path, tok):
    (tmp_path / "template.json").write_text(json.dumps({"prompt": "Q: {question}\nTopic: {topic}",
                                                        "completion": "{answer}"}))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"question": "What color is a lime?", "topic": "fruit",
                                                     "answer": "A lime is green."}) + "\n")
    data = read_channel(tmp_path, cfg(instruction_tuned=True))
    feature = trained(tok, data)[0]
    prompt = ids(tok, "Q: What color is a lime?\nTopic: fruit" + RESPONSE)
    answer = ids(tok, "A lime is green.")
    assert feature["input_ids"] == [BOS] + prompt + answer + [EOS]
    assert feature["labels"] == [X] * (1 + len(prompt)) + answer + [EOS]
    body = {"inputs": {"question": "What color is a lime?", "topic": "fruit"}}
    assert served(tok, data.prompt, body) == [BOS] + prompt


def test_chat_default_template(tmp_path, tok):
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Color of lime?"},
             {"role": "assistant", "content": "Green."}, {"role": "user", "content": "And snow?"},
             {"role": "assistant", "content": "White."}]
    (tmp_path / "c.jsonl").write_text(json.dumps({"messages": turns}) + "\n")
    data = read_channel(tmp_path, cfg(chat_dataset=True))
    feature = trained(tok, data)[0]
    context1 = ids(tok, "<|system|>\nBe brief.</s>\n<|user|>\nColor of lime?</s>\n<|assistant|>\n")
    answer1 = ids(tok, "Green.</s>\n")
    context2 = ids(tok, "<|user|>\nAnd snow?</s>\n<|assistant|>\n")
    answer2 = ids(tok, "White.</s>\n")
    assert feature["input_ids"] == [BOS] + context1 + answer1 + context2 + answer2
    assert feature["labels"] == [X] * (1 + len(context1)) + answer1 + [X] * len(context2) + answer2
    assert answer1[-2:] == [EOS, ids(tok, "\n")[0]]  # each turn learns to stop
    # the server asked the same conversation up to the last answer builds exactly the trained context
    assert served(tok, data.prompt, {"messages": turns[:4]}) == [BOS] + context1 + answer1 + context2


def test_chat_template_that_writes_bos_gets_one_bos(tmp_path, tok):
    turns = [{"role": "user", "content": "Color of lime?"}, {"role": "assistant", "content": "Green."},
             {"role": "user", "content": "And snow?"}, {"role": "assistant", "content": "White."}]
    (tmp_path / "c.jsonl").write_text(json.dumps({"dialog": turns}) + "\n")
    data = read_channel(tmp_path, cfg(chat_dataset=True, chat_template=BOS_TEMPLATE))
    feature = trained(tok, data)[0]
    context1, answer1 = ids(tok, "[INST] Color of lime? [/INST]"), ids(tok, " Green. </s>")
    context2, answer2 = ids(tok, "[INST] And snow? [/INST]"), ids(tok, " White. </s>")
    assert feature["input_ids"] == [BOS] + context1 + answer1 + context2 + answer2
    assert feature["input_ids"][:2] != [BOS, BOS]
    assert feature["labels"] == [X] * (1 + len(context1)) + answer1 + [X] * len(context2) + answer2
    assert served(tok, data.prompt, {"messages": turns[:3]}) == [BOS] + context1 + answer1 + context2
    assert served(tok, data.prompt, {"inputs": [turns[:1]]}) == [BOS] + context1  # Llama-2 dialog payload


def test_domain_text_blocks(tmp_path, tok):
    docs = ["The lime is green and the lemon is yellow.", "Snow is white."]
    (tmp_path / "d.txt").write_text("\n".join(docs) + "\n")
    data = read_channel(tmp_path, cfg())
    assert data.format == "domain"
    features = trained(tok, data, max_len=8)
    stream = ids(tok, docs[0]) + [EOS] + ids(tok, docs[1]) + [EOS]
    blocks = [stream[i:i + 8] for i in range(0, len(stream), 8)]
    if len(blocks[-1]) < 2:
        blocks.pop()
    assert [f["input_ids"] for f in features] == blocks
    assert [f["labels"] for f in features] == blocks


def test_autopilot_table(tmp_path, tok):
    (tmp_path / "t.csv").write_text('input,output\n"Color of lime, please?",Green.\n')
    data = read_channel(tmp_path, cfg())
    assert data.format == "table"
    feature = trained(tok, data)[0]
    prompt, answer = ids(tok, "Color of lime, please?" + RESPONSE), ids(tok, "Green.")
    assert feature["input_ids"] == [BOS] + prompt + answer + [EOS]
    assert feature["labels"] == [X] * (1 + len(prompt)) + answer + [EOS]
    assert served(tok, data.prompt, {"inputs": {"input": "Color of lime, please?"}}) == [BOS] + prompt


def test_seq2seq_t5(tmp_path, tiny):
    from transformers import AutoTokenizer

    t5 = AutoTokenizer.from_pretrained(tiny("t5"))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "Color of lime?", "completion": "Green."}) + "\n")
    data = read_channel(tmp_path, cfg(instruction_tuned=True))
    feature = trained(t5, data, seq2seq=True)[0]
    source = ids(t5, "Color of lime?" + RESPONSE)
    assert feature["input_ids"] == source + [EOS]  # no BOS for encoder-decoder models
    assert feature["labels"] == ids(t5, "Green.") + [EOS]
    assert served(t5, data.prompt, {"text_inputs": {"prompt": "Color of lime?"}}, seq2seq=True) == source + [EOS]


def test_training_prompt_equals_serving_prompt_for_plain_text(tok):
    example = Example(source="f:1", prompt="<s>Already has a BOS" + RESPONSE, completion="Yes.")
    fmt = PromptFormat(kind="instruction")
    feature = tokenize_examples([example], tok, fmt, max_len=64, max_out=8, seq2seq=False).features[0]
    n_prompt = feature["labels"].index(next(label for label in feature["labels"] if label != X))
    assert feature["input_ids"][:n_prompt] == [BOS] + ids(tok, "Already has a BOS" + RESPONSE)
    assert served(tok, fmt, {"inputs": example.prompt}) == feature["input_ids"][:n_prompt]


def test_instruction_prompt_completion_rows_without_a_template(tmp_path, tok):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "Color of lime?", "completion": "Green."}) + "\n")
    data = read_channel(tmp_path, cfg(instruction_tuned=True))
    feature = trained(tok, data)[0]
    prompt, answer = ids(tok, "Color of lime?" + RESPONSE), ids(tok, "Green.")
    assert feature["input_ids"] == [BOS] + prompt + answer + [EOS]
    assert feature["labels"] == [X] * (1 + len(prompt)) + answer + [EOS]
    assert served(tok, data.prompt, {"inputs": "Color of lime?"}) == [BOS] + prompt


def test_instruction_without_the_demarcation_key(tmp_path, tok):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "Color of lime?", "completion": " Green."}) + "\n")
    data = read_channel(tmp_path, cfg(instruction_tuned=True, add_input_output_demarcation_key=False))
    feature = trained(tok, data)[0]
    prompt, answer = ids(tok, "Color of lime?"), ids(tok, " Green.")
    assert feature["input_ids"] == [BOS] + prompt + answer + [EOS]
    assert feature["labels"] == [X] * (1 + len(prompt)) + answer + [EOS]


def test_sharegpt_conversations_equal_messages(tmp_path, tok):
    sharegpt = [{"from": "human", "value": "Color of lime?"}, {"from": "gpt", "value": "Green."}]
    (tmp_path / "c.jsonl").write_text(json.dumps({"conversations": sharegpt}) + "\n")
    data = read_channel(tmp_path, cfg(chat_dataset=True))
    feature = trained(tok, data)[0]
    context, answer = ids(tok, "<|user|>\nColor of lime?</s>\n<|assistant|>\n"), ids(tok, "Green.</s>\n")
    assert feature["input_ids"] == [BOS] + context + answer
    assert feature["labels"] == [X] * (1 + len(context)) + answer


@pytest.mark.parametrize("name,content", [
    ("d.csv", 'id,text\n1,"The lime is green, the lemon yellow."\n2,Snow is white.\n'),
    ("d.jsonl", json.dumps({"text": "The lime is green, the lemon yellow."}) + "\n"
     + json.dumps({"text": "Snow is white."}) + "\n"),
    ("d.json", json.dumps([{"text": "The lime is green, the lemon yellow."}, {"text": "Snow is white."}])),
])
def test_domain_text_from_csv_and_json(tmp_path, tok, name, content):
    (tmp_path / name).write_text(content)
    data = read_channel(tmp_path, cfg())
    assert data.format == "domain"
    features = trained(tok, data, max_len=8)
    stream = ids(tok, "The lime is green, the lemon yellow.") + [EOS] + ids(tok, "Snow is white.") + [EOS]
    blocks = [stream[i:i + 8] for i in range(0, len(stream), 8)]
    if len(blocks[-1]) < 2:
        blocks.pop()
    assert [f["input_ids"] for f in features] == blocks
    assert [f["labels"] for f in features] == blocks
