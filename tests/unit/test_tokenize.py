import pytest

from tuneforge.data import Collator, tokenize_examples
from tuneforge.data.formats import Example
from tuneforge.data.tokenize import IGNORE
from tuneforge.errors import DataError
from tuneforge.data.prompt import PromptFormat, encode_prompt


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny("llama"))


INSTR = PromptFormat(kind="instruction")


def test_prompt_masked_completion_and_eos_trainable(tokenizer):
    example = Example(source="f:1", prompt="What color is the lime?\n\n### Response:\n", completion="The lime is green.")
    data = tokenize_examples([example], tokenizer, INSTR, max_len=128, max_out=32, seq2seq=False)
    feature = data.features[0]
    ids, labels = feature["input_ids"], feature["labels"]
    prompt_ids = encode_prompt(tokenizer, example.prompt, seq2seq=False)
    assert ids[: len(prompt_ids)] == prompt_ids
    assert labels[: len(prompt_ids)] == [IGNORE] * len(prompt_ids)
    trainable = [t for t in labels if t != IGNORE]
    assert trainable[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(trainable[:-1]) == "The lime is green."
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert data.trainable_tokens == len(trainable) and data.truncated == 0


def test_collator_pads_labels_with_ignore_not_pad(tokenizer):
    batch = Collator(tokenizer.pad_token_id)([{"input_ids": [1, 5, 2], "labels": [IGNORE, 5, 2]},
                                              {"input_ids": [1, 2], "labels": [IGNORE, 2]}])
    assert batch["input_ids"][1].tolist() == [1, 2, tokenizer.pad_token_id]
    assert batch["labels"][1].tolist() == [IGNORE, 2, IGNORE]
    assert batch["attention_mask"][1].tolist() == [1, 1, 0]


def test_truncation_drops_prompt_before_completion(tokenizer):
    example = Example(source="f:7", prompt="word " * 200, completion="The lime is green.")
    data = tokenize_examples([example], tokenizer, INSTR, max_len=32, max_out=32, seq2seq=False)
    feature = data.features[0]
    assert len(feature["input_ids"]) == 32 and data.truncated == 1 and data.truncated_sources == ["f:7"]
    assert feature["input_ids"][0] == tokenizer.bos_token_id
    assert feature["labels"][-1] == tokenizer.eos_token_id


def test_no_trainable_token_fails_with_source(tokenizer):
    with pytest.raises(DataError) as err:
        tokenize_examples([Example(source="rows.jsonl:3", prompt="q", completion="")], tokenizer, INSTR,
                          max_len=64, max_out=8, seq2seq=True)
    assert "rows.jsonl:3" in str(err.value)


def test_chat_trains_only_assistant_turns(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Color of lime?"},
                {"role": "assistant", "content": "Green."}, {"role": "user", "content": "And snow?"},
                {"role": "assistant", "content": "White."}]
    chat = PromptFormat(kind="chat", prompt_template="", completion_template="")
    feature = tokenize_examples([Example(source="c:1", messages=messages)], tokenizer, chat,
                                max_len=256, max_out=8, seq2seq=False).features[0]
    trained = tokenizer.decode([t for t in feature["labels"] if t != IGNORE])
    assert "Green." in trained and "White." in trained
    assert "Color of lime" not in trained and "Be brief" not in trained and "<|user|>" not in trained
    assert trained.count(tokenizer.eos_token) == 2  # each assistant turn learns to stop


def test_domain_text_is_packed_into_blocks(tokenizer):
    examples = [Example(source=f"t:{i}", text="The lime is green. " * 5) for i in range(10)]
    domain = PromptFormat(kind="domain", prompt_template="", completion_template="")
    data = tokenize_examples(examples, tokenizer, domain, max_len=16, max_out=8, seq2seq=False)
    assert all(len(f["input_ids"]) == 16 for f in data.features[:-1])
    assert all(f["labels"] == f["input_ids"] for f in data.features)
    assert data.trainable_share == 1.0


def test_seq2seq_layout(tokenizer):
    feature = tokenize_examples([Example(source="s:1", prompt="Q?", completion="A.")], tokenizer, INSTR,
                                max_len=16, max_out=8, seq2seq=True).features[0]
    assert feature["input_ids"][-1] == tokenizer.eos_token_id and feature["labels"][-1] == tokenizer.eos_token_id
    assert IGNORE not in feature["labels"]


def test_workers_give_identical_features_in_identical_order(tokenizer):
    examples = [Example(source=f"f:{i}", prompt=f"Question {i}? " + "word " * (i * 7 % 40), completion=f"Answer {i}.")
                for i in range(13)]
    one = tokenize_examples(examples, tokenizer, INSTR, max_len=24, max_out=8, seq2seq=False)
    two = tokenize_examples(examples, tokenizer, INSTR, max_len=24, max_out=8, seq2seq=False, workers=2)
    three = tokenize_examples(examples, tokenizer, INSTR, max_len=24, max_out=8, seq2seq=False, workers=3)
    assert one.features == two.features == three.features
    assert one.truncated_sources == two.truncated_sources == three.truncated_sources != []
    answers = [tokenizer.decode([t for t in f["labels"] if t not in (IGNORE, tokenizer.eos_token_id)])
               for f in two.features]
    assert answers == [f"Answer {i}." for i in range(13)]


def _long_prompts(n, lost):
    """n rows; the first `lost` have answers so long that prompt-first truncation to 12 tokens
    leaves none of their prompt."""
    return [Example(source=f"rows.jsonl:{i + 1}", prompt="What color is the lime?\n",
                    completion="The lime is green. " * (10 if i < lost else 1)) for i in range(n)]


def test_most_rows_losing_their_whole_prompt_fail(tokenizer):
    with pytest.raises(DataError) as err:
        tokenize_examples(_long_prompts(10, 6), tokenizer, INSTR, max_len=12, max_out=8, seq2seq=False)
    first = str(err.value).splitlines()[0]
    assert first.startswith("rows.jsonl:1: 6 of 10 rows lose their whole prompt to truncation at max_input_length=12")
    assert "Fix: raise max_input_length" in first


def test_few_rows_losing_their_prompt_warn_and_are_counted(tokenizer, caplog):
    data = tokenize_examples(_long_prompts(10, 2), tokenizer, INSTR, max_len=12, max_out=8, seq2seq=False)
    report = data.report()
    assert report["rows_prompt_lost"] == 2 and report["prompt_lost_examples"] == ["rows.jsonl:1", "rows.jsonl:2"]
    assert report["rows_completion_lost"] == 0
    assert "2 of 10 rows lose their whole prompt to truncation at max_input_length=12" in caplog.text
    # the row keeps BOS and as much of the completion as fits
    assert data.features[0]["input_ids"][0] == tokenizer.bos_token_id
    assert data.features[0]["labels"][1:] == data.features[0]["input_ids"][1:]


def test_long_row_is_cut_before_tokenizing_with_the_same_result(tokenizer, caplog):
    prompt = "The lime is green and the lemon is yellow. " * 5000 + "Which is green?\n"  # ~215k characters
    completion = "The lime. " * 3000
    examples = [Example(source="big.jsonl:7", prompt=prompt, completion=completion)] + [
        Example(source=f"big.jsonl:{i}", prompt="Q?", completion="A.") for i in (8, 9)]
    data = tokenize_examples(examples, tokenizer, INSTR, max_len=64, max_out=8, seq2seq=False)
    # what truncating the fully tokenized row gives: the whole prompt goes, the completion keeps its start
    full_completion = tokenizer(completion, add_special_tokens=False)["input_ids"]
    assert data.features[0]["input_ids"] == [tokenizer.bos_token_id] + full_completion[:63]
    assert data.truncated_sources == ["big.jsonl:7"] and data.report()["long_rows_cut_before_tokenizing"] == ["big.jsonl:7"]
    assert data.report()["rows_prompt_lost"] == 1
    assert "big.jsonl:7" in caplog.text
    # a long prompt keeps its end, exactly as truncating the fully tokenized prompt would
    long_prompt = Example(source="s:1", prompt="word " * 20000, completion="Green.")
    cut = tokenize_examples([long_prompt], tokenizer, INSTR, max_len=64, max_out=8, seq2seq=False)
    full_prompt = tokenizer("word " * 20000, add_special_tokens=False)["input_ids"]
    green = tokenizer("Green.", add_special_tokens=False)["input_ids"]
    keep = 64 - 1 - len(green) - 1
    assert cut.features[0]["input_ids"] == [tokenizer.bos_token_id] + full_prompt[-keep:] + green + [tokenizer.eos_token_id]
    assert cut.long_rows == ["s:1"] and cut.truncated == 1 and cut.prompt_lost == []


def test_domain_tail_that_is_left_out_is_counted(tokenizer):
    examples = [Example(source=f"t:{i}", text="The lime is green. " * 5) for i in range(3)]
    domain = PromptFormat(kind="domain", prompt_template="", completion_template="")
    data = tokenize_examples(examples, tokenizer, domain, max_len=16, max_out=8, seq2seq=False)
    stream = sum(len(tokenizer(e.text, add_special_tokens=False)["input_ids"]) + 1 for e in examples)
    assert data.tokens + data.report()["tail_tokens_dropped"] == stream
