import json

import pandas as pd
import pytest

from tuneforge.config import parse_hyperparameters
from tuneforge.data import read_channel, select_and_split
from tuneforge.data.formats import detect_format
from tuneforge.errors import DataError
from tuneforge.data.prompt import DEMARCATION_KEY
from tuneforge.samples import write_sample_data


def cfg(**values):
    return parse_hyperparameters({k: str(v) for k, v in values.items()})


def test_instruction_with_template(tmp_path):
    channels = write_sample_data("instruction", tmp_path, n_train=10, n_val=2)
    data = read_channel(channels["train"], cfg(instruction_tuned=True))
    assert data.format == "instruction" and len(data.examples) == 10
    first = json.loads((channels["train"] / "data.jsonl").read_text().splitlines()[0])
    assert data.examples[0].prompt.endswith(DEMARCATION_KEY)
    assert first["instruction"] in data.examples[0].prompt and first["context"] in data.examples[0].prompt
    assert data.examples[0].completion == first["response"]
    assert data.examples[0].source == "data.jsonl:1"


def test_demarcation_can_be_turned_off(tmp_path):
    channels = write_sample_data("instruction", tmp_path, n_train=3, n_val=1)
    data = read_channel(channels["train"], cfg(instruction_tuned=True, add_input_output_demarcation_key=False))
    assert "### Response:" not in data.examples[0].prompt


def test_default_templates(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"prompt": "Q?", "completion": "A."}) + "\n")
    data = read_channel(tmp_path, cfg(instruction_tuned=True, add_input_output_demarcation_key=False))
    assert (data.examples[0].prompt, data.examples[0].completion) == ("Q?", "A.")
    dolly = tmp_path / "dolly"
    dolly.mkdir()
    (dolly / "d.jsonl").write_text(json.dumps({"instruction": "I", "context": "C", "response": "R"}) + "\n")
    data = read_channel(dolly, cfg(instruction_tuned=True))
    assert "### Instruction:\nI" in data.examples[0].prompt and data.examples[0].completion == "R"


def test_malformed_json_line_names_file_and_line(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "broken\n')
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg(instruction_tuned=True))
    assert f"{tmp_path / 'rows.jsonl'}:2" in str(err.value) and "malformed JSON" in str(err.value)


def test_missing_template_field_names_field_and_line(tmp_path):
    (tmp_path / "template.json").write_text(json.dumps({"prompt": "{question} {topic}", "completion": "{answer}"}))
    rows = [{"question": "q", "topic": "t", "answer": "a"}, {"question": "q", "answer": "a"}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg(instruction_tuned=True))
    assert "rows.jsonl:2" in str(err.value) and "'topic'" in str(err.value)


def test_empty_channel(tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_channel(tmp_path, cfg(instruction_tuned=True))


def test_chat_rows_and_validation(tmp_path):
    channels = write_sample_data("chat", tmp_path, n_train=6, n_val=1)
    data = read_channel(channels["train"], cfg(chat_dataset=True))
    assert data.format == "chat" and all(e.messages[-1]["role"] == "assistant" for e in data.examples)
    for key in ("messages", "conversations"):
        (tmp_path / key).mkdir()
        (tmp_path / key / "c.jsonl").write_text(json.dumps({key: [{"role": "user", "content": "hi"},
                                                                  {"role": "assistant", "content": "yo"}]}) + "\n")
        assert read_channel(tmp_path / key, cfg(chat_dataset=True)).examples[0].messages[1]["content"] == "yo"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "c.jsonl").write_text(json.dumps({"dialog": [{"role": "user", "content": "a"},
                                                        {"role": "user", "content": "b"}]}) + "\n")
    with pytest.raises(DataError, match="alternate"):
        read_channel(bad, cfg(chat_dataset=True))


def test_domain_formats(tmp_path):
    for name, body in (("a.txt", "first line\n\nsecond line\n"), ("b.csv", "id,text\n1,hello world\n2,more\n"),
                       ("c.jsonl", '{"text": "one"}\n{"text": "two"}\n'), ("d.json", '[{"body": "x"}, {"body": "y"}]')):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_text(body)
        data = read_channel(folder, cfg())
        assert data.format == "domain" and len(data.examples) == 2, name
    assert read_channel(tmp_path / "b", cfg()).examples[0].text == "hello world"


def test_domain_needs_exactly_one_file(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    (tmp_path / "b.txt").write_text("y\n")
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg())
    assert "exactly one" in str(err.value) and "a.txt" in str(err.value) and "b.txt" in str(err.value)


def test_tables_csv_and_parquet(tmp_path):
    pd.DataFrame({"input": ["q1", "q2"], "output": ["a1", "a2"]}).to_parquet(tmp_path / "p.parquet")
    (tmp_path / "t.csv").write_text("input,output\nq3,a3\n")
    data = read_channel(tmp_path, cfg())
    assert data.format == "table" and [e.completion for e in data.examples] == ["a1", "a2", "a3"]
    assert data.examples[0].prompt == "q1" + DEMARCATION_KEY


@pytest.mark.parametrize("header,message", [("input,extra,output", "extra column 'extra'"),
                                            ("input,answer", "missing column 'output'")])
def test_table_with_wrong_columns(tmp_path, header, message):
    (tmp_path / "t.csv").write_text(header + "\n" + ",".join(["v"] * len(header.split(","))) + "\n")
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg())
    assert message in str(err.value) and "t.csv" in str(err.value)


def test_detection_and_forcing(tmp_path):
    (tmp_path / "t.csv").write_text("text\nhello\n")
    assert detect_format(tmp_path, cfg()) == "domain"
    assert detect_format(tmp_path, cfg(data_format="table")) == "table"


def test_split_is_seeded_and_capped():
    rows = list(range(100))
    config = cfg(validation_split_ratio=0.2, train_data_split_seed=3, max_train_samples=50)
    train, val = select_and_split(rows, None, config)
    assert len(val) == 20 and len(train) == 50 and not set(train) & set(val)
    assert select_and_split(rows, None, config) == (train, val)
    other = select_and_split(rows, None, cfg(validation_split_ratio=0.2, train_data_split_seed=4))[1]
    assert other != val
    assert select_and_split(rows, [1, 2, 3], cfg(max_val_samples=2))[1] == [1, 2]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_tables_with_other_delimiters_are_tables(tmp_path, delimiter):
    d = delimiter
    (tmp_path / "t.csv").write_text(f'input{d}output\nq1{d}a1\n"x{d}y"{d}"a, 2"\n')
    assert detect_format(tmp_path, cfg()) == "table"
    data = read_channel(tmp_path, cfg())
    assert data.format == "table"
    assert [(e.prompt, e.completion) for e in data.examples] == [("q1" + DEMARCATION_KEY, "a1"),
                                                                 (f"x{d}y" + DEMARCATION_KEY, "a, 2")]
    assert [e.source for e in data.examples] == ["t.csv:2", "t.csv:3"]


def test_table_header_with_byte_order_mark(tmp_path):
    (tmp_path / "t.csv").write_bytes("\ufeffinput;output\nq;a\n".encode("utf-8"))
    data = read_channel(tmp_path, cfg())
    assert data.format == "table" and data.examples[0].completion == "a"


def test_table_header_in_an_unknown_delimiter_fails(tmp_path):
    (tmp_path / "t.csv").write_text("input output\nq a\n")
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg())
    assert str(err.value).startswith(f"{tmp_path / 't.csv'}:1: the CSV header 'input output' names input and output")
    assert "Fix: write the header as input,output" in str(err.value)


def test_table_row_with_wrong_field_count_names_line(tmp_path):
    (tmp_path / "t.csv").write_text("input;output\nq;a\nq;a;extra\n")
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg())
    assert str(err.value).startswith(f"{tmp_path / 't.csv'}:3: the row has 3 fields and the header 2")


def test_domain_csv_with_semicolons_reads_the_text_column(tmp_path):
    (tmp_path / "d.csv").write_text("id;text\n1;hello, world\n2;more\n")
    assert [e.text for e in read_channel(tmp_path, cfg()).examples] == ["hello, world", "more"]


def test_positional_template_placeholder_fails_naming_the_file(tmp_path):
    (tmp_path / "template.json").write_text(json.dumps({"prompt": "Question: {}", "completion": "{answer}"}))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg(instruction_tuned=True))
    assert str(err.value).startswith(f"{tmp_path / 'template.json'}: template 'prompt' has a positional placeholder {{}}")
    assert "Fix: name every placeholder after a row field, e.g. {question}" in str(err.value)


@pytest.mark.parametrize("name,body,config,line", [
    ("t.csv", b"input,output\nq,a\ncaf\xe9,b\n", {}, 3),
    ("rows.jsonl", b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "b"}\n',
     {"instruction_tuned": True}, 2),
    ("d.txt", b"fine\ncaf\xe9\n", {}, 2),
    ("d.json", b'[{"text": "fine"},\n {"text": "caf\xe9"}]', {}, 2),
])
def test_text_that_is_not_utf8_names_file_and_line(tmp_path, name, body, config, line):
    (tmp_path / name).write_bytes(body)
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg(**config))
    first = str(err.value).splitlines()[0]
    assert first.startswith(f"{tmp_path / name}:{line}: the file is not UTF-8 text (byte 0xe9 at column ")
    assert "Fix: save the file as UTF-8" in first


def test_template_that_is_not_utf8(tmp_path):
    (tmp_path / "template.json").write_bytes(b'{"prompt": "Fr\xe9d {question}", "completion": "{answer}"}')
    (tmp_path / "rows.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataError, match="template.json:1: the file is not UTF-8"):
        read_channel(tmp_path, cfg(instruction_tuned=True))


def test_line_over_the_size_bound_fails_before_it_is_read(tmp_path, monkeypatch):
    from tuneforge.data import formats

    monkeypatch.setattr(formats, "MAX_LINE_BYTES", 1000)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n"
                                         + json.dumps({"prompt": "x" * 5000, "completion": "b"}) + "\n")
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg(instruction_tuned=True))
    assert str(err.value).startswith(f"{tmp_path / 'rows.jsonl'}:2: the line holds more than 1,000 bytes")


@pytest.mark.parametrize("name,header,column", [("t.csv", "input,input,output", "input"),
                                               ("t.csv", "input;output;output", "output"),
                                               ("d.csv", "text,id,text", "text")])
def test_csv_with_a_duplicated_column_names_file_and_column(tmp_path, name, header, column):
    (tmp_path / name).write_text(header + "\n" + ",;"[";" in header].join("abc") + "\n")
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg())
    assert str(err.value).startswith(f"{tmp_path / name}: the column {column!r} appears 2 times")
    assert f"Fix: keep one {column!r} column" in str(err.value)


@pytest.mark.parametrize("value,kind", [(["a", "b"], "a list"), ({"a": 1}, "an object"), (True, "true/false")])
def test_instruction_field_that_is_not_text_names_file_line_and_field(tmp_path, value, kind):
    rows = [{"prompt": "q", "completion": "a"}, {"prompt": "q", "completion": value}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg(instruction_tuned=True))
    assert str(err.value).startswith(f"{tmp_path / 'rows.jsonl'}:2: field 'completion' holds {kind}, not text")
    assert "Fix: write 'completion' as a JSON string" in str(err.value)


def test_instruction_numbers_and_null_are_text(tmp_path):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": 12, "completion": 2.5}) + "\n"
                                         + json.dumps({"prompt": None, "completion": 3}) + "\n")
    data = read_channel(tmp_path, cfg(instruction_tuned=True, add_input_output_demarcation_key=False))
    assert [(e.prompt, e.completion) for e in data.examples] == [("12", "2.5"), ("", "3")]


def test_domain_json_text_that_is_a_list_names_file_line_and_field(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{"text": null}\n{"text": ["a", "b"]}\n')
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg())
    assert str(err.value).startswith(f"{tmp_path / 'd.jsonl'}:3: field 'text' holds a list, not text")
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{"text": null}\n')
    assert [e.text for e in read_channel(tmp_path, cfg()).examples] == ["fine"]


@pytest.mark.parametrize("values,kind", [([["a"], ["b"]], "list<"), ([{"x": "a"}, {"x": "b"}], "struct<"),
                                         ([b"a", b"b"], "binary")])
def test_parquet_column_that_is_not_text_names_file_and_column(tmp_path, values, kind):
    pd.DataFrame({"input": ["q1", "q2"], "output": values}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg())
    assert str(err.value).startswith(f"{tmp_path / 'p.parquet'}: the column 'output' holds {kind}")
    assert "Fix: store 'output' as a string column" in str(err.value)


def test_a_link_that_leaves_the_channel_is_refused(tmp_path):
    channel, outside = tmp_path / "train", tmp_path / "secret.txt"
    channel.mkdir()
    outside.write_text("root:x:0:0\n")
    (channel / "d.txt").symlink_to(outside)
    with pytest.raises(DataError) as err:
        read_channel(channel, cfg())
    assert str(err.value).startswith(f"{channel / 'd.txt'}: the file is a link to {outside}, outside the channel")
    (channel / "d.txt").unlink()
    (channel / "real.txt").write_text("inside\n")
    (channel / "d.txt").symlink_to(channel / "real.txt")  # a link within the channel is fine
    assert detect_format(channel, cfg()) == "domain"


@pytest.mark.parametrize("placeholder,problem", [
    ("{question!r}", "with a conversion (!r)"), ("{question!s}", "with a conversion (!s)"),
    ("{question.upper}", "which is not a plain field name"), ("{question[0]}", "which is not a plain field name"),
    ("{question:d}", "whose format spec 'd' does not apply to text")])
def test_template_placeholder_that_is_not_a_plain_field_names_file_field_and_placeholder(tmp_path, placeholder,
                                                                                        problem):
    (tmp_path / "template.json").write_text(json.dumps({"prompt": "Q: {question}", "completion": placeholder}))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataError) as err:
        read_channel(tmp_path, cfg(instruction_tuned=True))
    assert str(err.value).startswith(f"{tmp_path / 'template.json'}: template 'completion' has the placeholder "
                                     f"{placeholder}, {problem}")
    assert "Fix: name every placeholder after a row field" in str(err.value)


def test_template_placeholder_with_a_text_format_spec_is_kept(tmp_path):
    (tmp_path / "template.json").write_text(json.dumps({"prompt": "Q: {question:>3}", "completion": "{answer}"}))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    data = read_channel(tmp_path, cfg(instruction_tuned=True, add_input_output_demarcation_key=False))
    assert data.examples[0].prompt == "Q:   q"
