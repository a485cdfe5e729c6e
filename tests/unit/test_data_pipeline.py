"""The Arrow-backed tokenized data (data/arrow.py): the same rows, order and counts as the in-memory
tokenize_examples on every data format, identical for 1 and 2 workers, memory-mapped from files on
disk, reused without tokenizing again, and read by batching and packing from its columns."""

import json
import logging

import pytest

from tuneforge.config import parse_hyperparameters
from tuneforge.data import arrow, read_channel, tokenize_examples
from tuneforge.data.formats import Example
from tuneforge.data.prompt import PromptFormat
from tuneforge.samples import write_sample_data
from tuneforge.llm.batching import column_lengths, describe, row_lengths
from tuneforge.llm.packing import packed_padding_share
from tuneforge.llm.identity import data_fingerprint

INSTR = PromptFormat(kind="instruction")


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny("llama"))


def _rows(dataset) -> list[dict]:
    keys = [k for k in ("input_ids", "labels", "segment_lengths") if k in dataset.column_names]
    return [{k: row[k] for k in keys} for row in dataset]


def _build(folder, examples, tokenizer, prompt, **options):
    arrow.build_or_reuse(folder, examples, tokenizer, prompt, **options)
    return arrow.open_tokenized(folder)


def _channel(tmp_path, kind: str, n: int = 40):
    staged = write_sample_data(kind, tmp_path / "staging", n_train=n, n_val=4)
    values = {"instruction": {"instruction_tuned": "True"}, "chat": {"chat_dataset": "True"}}.get(kind, {})
    return read_channel(staged["train"], parse_hyperparameters(values))


@pytest.mark.parametrize("kind,family,seq2seq", [
    ("instruction", "llama", False), ("chat", "llama", False), ("domain", "llama", False),
    ("table", "llama", False), ("instruction", "t5", True), ("domain", "t5", True)])
def test_arrow_rows_and_report_equal_the_in_memory_ones(tmp_path, tiny, kind, family, seq2seq):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny(family))
    data = _channel(tmp_path, kind)
    options = dict(max_len=48, max_out=16, seq2seq=seq2seq)  # short: some rows get truncated
    listed = tokenize_examples(data.examples, tok, data.prompt, **options)
    mapped = _build(tmp_path / "cache", data.examples, tok, data.prompt, workers=None, **options)
    assert _rows(mapped.features) == listed.features  # same ids, labels, segments, order
    assert mapped.report() == listed.report()
    assert mapped.fingerprint == data_fingerprint(listed.features)
    assert row_lengths(mapped.features) == row_lengths(listed.features)
    if kind == "domain" and not seq2seq:
        assert any(len(row["segment_lengths"]) > 1 for row in listed.features)


def test_one_and_two_workers_write_identical_data(tmp_path, tokenizer):
    examples = [Example(source=f"f:{i}", prompt=f"Question {i}? " + "word " * (i * 7 % 40), completion=f"Answer {i}.")
                for i in range(301)]
    options = dict(max_len=24, max_out=8, seq2seq=False)
    one = _build(tmp_path / "one", examples, tokenizer, INSTR, workers=1, **options)
    two = _build(tmp_path / "two", examples, tokenizer, INSTR, workers=2, **options)
    assert _rows(one.features) == _rows(two.features)
    assert one.report() == two.report() and one.truncated > 0
    assert one.fingerprint == two.fingerprint
    answers = [tokenizer.decode([t for t in row["labels"] if t not in (-100, tokenizer.eos_token_id)])
               for row in one.features]
    assert answers == [f"Answer {i}." for i in range(301)]  # the order rows were read in


def test_dataset_is_memory_mapped_from_its_files_and_reused(tmp_path, tokenizer, caplog):
    examples = [Example(source=f"f:{i}", prompt=f"Q{i}?", completion=f"A{i}.") for i in range(50)]
    options = dict(max_len=32, max_out=8, seq2seq=False, workers=None)
    folder = tmp_path / "cache" / "train"
    with caplog.at_level(logging.INFO, logger="tuneforge.data.arrow"):
        first = _build(folder, examples, tokenizer, INSTR, **options)
    assert "tokenized 50 rows" in caplog.text
    files = [f["filename"] for f in first.features.cache_files]
    assert files == [str(folder / arrow.TOKENS_FILE)] and (folder / arrow.TOKENS_FILE).stat().st_size > 0
    assert json.loads((folder / arrow.STATS_FILE).read_text())["rows"] == 50
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tuneforge.data.arrow"):
        second = _build(folder, examples, tokenizer, INSTR, **options)
    assert "tokenized 50 rows" not in caplog.text and "reusing the tokenized data" in caplog.text
    assert _rows(second.features) == _rows(first.features)
    changed = examples[:-1] + [Example(source="f:49", prompt="Q49?", completion="Another answer.")]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tuneforge.data.arrow"):
        third = _build(folder, changed, tokenizer, INSTR, **options)
    assert "tokenized 50 rows" in caplog.text  # other rows: tokenized again
    assert _rows(third.features)[-1] != _rows(first.features)[-1]


def test_failed_tokenizing_leaves_no_folder_that_looks_complete(tmp_path, tokenizer):
    from tuneforge.errors import DataError

    examples = [Example(source="rows.jsonl:1", prompt="Q?", completion="A."),
                Example(source="rows.jsonl:2", prompt="Q?", completion="")]
    folder = tmp_path / "train"
    with pytest.raises(DataError, match="no trainable token"):
        arrow.build_or_reuse(folder, examples, tokenizer, INSTR, max_len=32, max_out=8, seq2seq=False, workers=None)
    assert not (folder / arrow.STATS_FILE).exists()


def test_batching_and_packing_read_the_columns_as_they_read_lists(tmp_path, tokenizer):
    data = _channel(tmp_path, "domain", n=60)
    options = dict(max_len=32, max_out=8, seq2seq=False)
    listed = tokenize_examples(data.examples, tokenizer, data.prompt, **options)
    mapped = _build(tmp_path / "cache", data.examples, tokenizer, data.prompt, workers=None, **options)
    for key in ("input_ids", "labels"):
        assert column_lengths(mapped.features, key) == column_lengths(listed.features, key)
    assert describe(mapped.features, True, 2, 1, 7) == describe(listed.features, True, 2, 1, 7)
    for strategy in ("group_by_length", "random"):
        assert (packed_padding_share(mapped.features, 64, strategy, 2, 1, 7)
                == packed_padding_share(listed.features, 64, strategy, 2, 1, 7))


def test_the_training_rows_text_is_freed_after_setup(job, tiny):
    """After setup a rank holds the tokens (memory-mapped), not a Python copy of the rows' text:
    only the validation rows stay (ROUGE and the report read them)."""
    import gc

    from tuneforge.contract import Paths
    from tuneforge.llm.recipe import Recipe

    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=24, n_val=4)
    raw = {"instruction_tuned": "True", "max_steps": "1"}
    job.hyperparameters(raw)
    prepared = Recipe(Paths(job.base), parse_hyperparameters(raw), raw).setup()
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, Example)]
    assert prepared.data.train_tokens.rows == 24 and len(prepared.data.val_examples) == 4
    assert sorted(e.source for e in alive) == sorted(e.source for e in prepared.data.val_examples)
