"""Read a channel folder in one of the four formats JumpStart and Autopilot accept.

- instruction: *.jsonl rows + optional template.json ({"prompt", "completion"} with {field}s)
- chat: *.jsonl rows holding [{role, content}, ...] under dialog, messages or conversations
- domain: exactly one CSV, JSON/JSONL or TXT file of free text
- table: CSV or Parquet files with exactly the columns input and output (Autopilot)
- preference: *.jsonl rows with chosen and rejected answers (dpo, orpo, simpo), or unpaired
  prompt/completion/label rows (kto) (data/preference.py)
Every problem is a DataError naming the file, the line and the field. Which formats exist, how each
is detected and which reader reads it is the registry's (data/registry/, one module per format).
"""

from __future__ import annotations

import csv
import json
import logging
import string
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .prompt import DEMARCATION_KEY, DOLLY_TEMPLATE, PromptFormat, template_fields

CHAT_KEYS = ("dialog", "messages", "conversations")
CHAT_ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user",
                  "assistant": "assistant"}
DOMAIN_SUFFIXES = (".csv", ".json", ".jsonl", ".txt")
FLAN_TEMPLATE = {"prompt": "{prompt}", "completion": "{completion}"}
CSV_DELIMITERS = ",;\t|"
MAX_LINE_BYTES = 64 << 20  # one JSON/CSV/TXT line; longer ones stop the job before they are read whole
UTF8_FIX = ("save the file as UTF-8 (Excel: 'CSV UTF-8'; or iconv -f cp1252 -t utf-8 FILE > FILE.new, "
            "with the file's real encoding in place of cp1252)")
log = logging.getLogger(__name__)


@dataclass
class Example:
    source: str  # "file:line", for errors and the data report
    prompt: str = ""  # instruction/table: the rendered prompt, demarcation included
    completion: str = ""  # instruction/table: the target
    messages: list[dict] | None = None  # chat
    text: str = ""  # domain


@dataclass
class LoadedData:
    format: str
    examples: list[Example]
    files: list[str]
    prompt: PromptFormat


def visible_files(folder: Path) -> list[Path]:
    """The channel's files, hidden ones left out; a link that leads outside the channel is refused
    (rglob does not descend into linked folders)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))
    root = folder.resolve()
    for path in files:
        if not path.resolve().is_relative_to(root):
            raise DataError(f"the file is a link to {path.resolve()}, outside the channel", where=str(path),
                            fix="upload the data itself into the channel: a regular file, not a link")
    return files


def detect_format(folder: Path, config) -> str:
    if config.data_format != "auto":
        return config.data_format
    from .registry import detection_order

    files = visible_files(folder)
    return next(fmt.name for fmt in detection_order() if fmt.detect(files, config))


def looks_like_table(files: list[Path], config) -> bool:
    """Parquet files, or a CSV file whose header has an input or output column."""
    if any(p.suffix == ".parquet" for p in files):
        return True
    for path in files:
        if path.suffix == ".csv":
            header = _csv_header(path)
            if "input" in header or "output" in header:
                return True
            line = header[0].lower() if len(header) == 1 else ""
            if "input" in line and "output" in line:
                raise DataError(f"the CSV header {line!r} names input and output but is not split into "
                                "columns by , ; tab or |", where=f"{path}:1",
                                fix="write the header as input,output (or input;output) with the same "
                                    "delimiter in every row")
    return False


def read_channel(folder: Path, config, *, prompt: PromptFormat | None = None,
                 fmt: str | None = None) -> LoadedData:
    """Read every example of a channel. `prompt`/`fmt` come from the train channel for validation."""
    folder = Path(folder)
    files = visible_files(folder) if folder.is_dir() else []
    if not files:
        raise DataError("the channel is empty", where=str(folder),
                        fix="put the training files in this folder (see docs/data-formats.md)")
    from .registry import check_method, data_format

    fmt = fmt or detect_format(folder, config)
    check_method(fmt, config, str(folder))
    reads = data_format(fmt)
    data = reads.read(folder, files, config, prompt)
    ignored = [p.name for p in files if str(p) not in data.files and not (reads.uses_template_json and p.suffix == ".json")]
    if ignored:
        log.warning("%s: %d file(s) that %s data does not use were ignored: %s", folder, len(ignored), fmt,
                    ", ".join(ignored[:10]))
    if not data.examples:
        raise DataError(f"no {fmt} rows were found", where=str(folder),
                        fix="add at least one non-empty row")
    return data


def read_job_channels(paths, config) -> tuple[LoadedData, LoadedData | None]:
    """The job's training channel and its validation channel, if any, read as the job reads them
    (the job, and `tuneforge check-job` before it)."""
    channel = paths.train_channel()
    if channel is None:
        raise DataError("no training data channel", where=str(paths.data_dir),
                        fix="provide the data in a channel named `train` or `training`")
    data = read_channel(channel, config)
    val_channel = paths.validation_channel()
    return data, read_channel(val_channel, config, prompt=data.prompt, fmt=data.format) if val_channel else None


# ---------------------------------------------------------------- instruction
def read_instruction(folder: Path, files: list[Path], config, prompt: PromptFormat | None) -> LoadedData:
    jsonl = [p for p in files if p.suffix == ".jsonl"]
    if not jsonl:
        raise DataError("instruction tuning needs *.jsonl files and found none", where=str(folder),
                        fix="save the rows as JSON Lines with the .jsonl extension")
    rows = [(path, line, row) for path in jsonl for line, row in _jsonl_rows(path)]
    if prompt is None:
        template = _read_template(folder, files) or _default_template(rows)
        prompt = PromptFormat(kind="instruction", prompt_template=template["prompt"],
                              completion_template=template["completion"],
                              demarcation=DEMARCATION_KEY if config.add_input_output_demarcation_key else "")
    needed = template_fields(prompt.prompt_template) + template_fields(prompt.completion_template)
    examples = []
    for path, line, row in rows:
        missing = [name for name in needed if name not in row]
        if missing:
            raise DataError(f"row has no field {missing[0]!r}, which the template names",
                            where=f"{path}:{line}",
                            fix=f"add {missing[0]!r} to every row or change template.json (fields: {', '.join(needed)})")
        for name in needed:
            _check_text_value(row[name], name, f"{path}:{line}")
        examples.append(Example(source=f"{path.name}:{line}", prompt=prompt.render_prompt(row),
                                completion=prompt.render_completion(row)))
    return LoadedData("instruction", examples, [str(p) for p in jsonl], prompt)


def _read_template(folder: Path, files: list[Path]) -> dict | None:
    candidates = [p for p in files if p.suffix == ".json"]
    if not candidates:
        return None
    named = [p for p in candidates if p.name == "template.json"]
    if named:
        path = named[0]
    elif len(candidates) == 1:
        path = candidates[0]
    else:
        raise DataError(f"found {len(candidates)} .json files and none is template.json", where=str(folder),
                        fix="name the prompt template template.json or keep only one .json file")
    try:
        template = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"the template is not valid JSON (line {exc.lineno}: {exc.msg})", where=str(path),
                        fix='write {"prompt": "...{field}...", "completion": "{field}"}') from None
    if not isinstance(template, dict) or not {"prompt", "completion"} <= set(template):
        raise DataError("the template needs the keys 'prompt' and 'completion'", where=str(path),
                        fix='write {"prompt": "...{field}...", "completion": "{field}"}')
    for key in ("prompt", "completion"):
        if not isinstance(template[key], str):
            raise DataError(f"template {key!r} must be a string", where=str(path),
                            fix='write {"prompt": "...{field}...", "completion": "{field}"}')
        problem = _template_problem(template[key])
        if problem:
            raise DataError(f"template {key!r} {problem}", where=str(path),
                            fix="name every placeholder after a row field, e.g. {question}, and write "
                                "literal braces as {{ }}")
    return {"prompt": template["prompt"], "completion": template["completion"]}


def _template_problem(template: str) -> str | None:
    """Why str.format could not fill this template from a row's named fields, if it could not."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"is not a valid format string ({exc})"
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name == "" or name.isdigit():
            return f"has a positional placeholder {shown}, which no row field can fill"
        if any(c in name for c in ".[") or "{" in (spec or ""):
            return f"has the placeholder {shown}, which is not a plain field name"
        if conversion:  # !r and !a would train on Python's quoting of the text
            return f"has the placeholder {shown}, with a conversion (!{conversion})"
        if spec and _bad_text_spec(spec):
            return f"has the placeholder {shown}, whose format spec {spec!r} does not apply to text"
    return None


def _bad_text_spec(spec: str) -> bool:
    try:
        format("", spec)
        return False
    except ValueError:
        return True


def _check_text_value(value, name: str, where: str) -> None:
    """A field that becomes training text must be a string, a number or null; str() of a list,
    an object or true/false would train on Python's spelling of it."""
    if isinstance(value, (list, dict, bool)):
        kind = {list: "a list", dict: "an object", bool: "true/false"}[type(value)]
        raise DataError(f"field {name!r} holds {kind}, not text", where=where,
                        fix=f"write {name!r} as a JSON string (join or serialize the value yourself)")


def _default_template(rows) -> dict:
    first = rows[0][2] if rows else {}
    if "prompt" in first and "completion" in first:
        return FLAN_TEMPLATE
    return DOLLY_TEMPLATE


def _jsonl_rows(path: Path):
    for number, text in _lines(path):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg} at column {exc.colno})", where=f"{path}:{number}",
                            fix="make every line one complete JSON object") from None
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, found {type(row).__name__}", where=f"{path}:{number}",
                            fix="make every line one JSON object with named fields")
        yield number, row


def _lines(path: Path):
    """(number, text) of each line, decoded as UTF-8; a line over MAX_LINE_BYTES is an error
    raised before the line is read whole, so one runaway row cannot exhaust memory."""
    with open(path, "rb") as handle:
        number = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(f"the line holds more than {MAX_LINE_BYTES:,} bytes", where=f"{path}:{number}",
                                fix="split or shorten that row (rows are cut to max_input_length tokens "
                                    "anyway), or check that the file has line breaks")
            text = _decode(raw, path, number)
            yield number, text[1:] if number == 1 and text.startswith("\ufeff") else text


def _decode(raw: bytes, path: Path, first_line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + raw.count(b"\n", 0, exc.start)
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column})",
                        where=f"{path}:{line}", fix=UTF8_FIX) from None


def _read_text(path: Path) -> str:
    text = _decode(path.read_bytes(), path, 1)
    return text[1:] if text.startswith("\ufeff") else text


# ---------------------------------------------------------------- chat
def read_chat(folder: Path, files: list[Path], config, prompt: PromptFormat | None) -> LoadedData:
    jsonl = [p for p in files if p.suffix in (".jsonl", ".json")]
    if not jsonl:
        raise DataError("chat data needs *.jsonl files and found none", where=str(folder),
                        fix="save one conversation per line in a .jsonl file")
    examples = []
    for path in jsonl:
        for line, row in _jsonl_rows(path):
            examples.append(Example(source=f"{path.name}:{line}",
                                    messages=_messages(row, f"{path}:{line}")))
    prompt = prompt or PromptFormat(kind="chat", prompt_template="", completion_template="",
                                    chat_template=config.chat_template or None)
    return LoadedData("chat", examples, [str(p) for p in jsonl], prompt)


def _messages(row: dict, where: str) -> list[dict]:
    key = next((k for k in CHAT_KEYS if k in row), None)
    if key is None:
        raise DataError(f"no conversation found (keys: {', '.join(sorted(row)) or 'none'})", where=where,
                        fix=f"put the list of turns under one of {', '.join(CHAT_KEYS)}")
    turns = row[key]
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{key!r} must be a non-empty list of turns", where=where,
                        fix='write [{"role": "user", "content": "..."}, {"role": "assistant", ...}]')
    messages = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"turn {index} is not an object", where=where, fix="write each turn as {role, content}")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        role = SHAREGPT_ROLES.get(role, role)
        if role not in CHAT_ROLES or not isinstance(content, str):
            raise DataError(f"turn {index} needs a role in {', '.join(CHAT_ROLES)} and a string content",
                            where=where, fix="fix the role name or content of that turn")
        messages.append({"role": role, "content": content})
    body = messages[1:] if messages[0]["role"] == "system" else messages
    for index, message in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise DataError(f"turns must alternate user/assistant after an optional system turn; "
                            f"turn {index + len(messages) - len(body)} is {message['role']!r}",
                            where=where, fix="reorder or merge the turns")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError("the conversation has no assistant turn to learn from", where=where,
                        fix="add the assistant's answer")
    return messages


# ---------------------------------------------------------------- domain adaptation
def read_domain(folder: Path, files: list[Path], config, prompt: PromptFormat | None) -> LoadedData:
    usable = [p for p in files if p.suffix in DOMAIN_SUFFIXES]
    if len(usable) != 1 or len(files) != 1:
        names = ", ".join(p.name for p in files)
        raise DataError(f"domain adaptation needs exactly one CSV, JSON or TXT file and found {len(files)} ({names})",
                        where=str(folder),
                        fix="combine the text into one file, or set instruction_tuned=True for *.jsonl + template.json")
    path = usable[0]
    if path.suffix == ".txt":
        texts = [(n, t.strip()) for n, t in _lines(path) if t.strip()]
    elif path.suffix == ".csv":
        texts = _csv_text_column(path)
    else:
        texts = _json_text(path)
    examples = [Example(source=f"{path.name}:{n}", text=t) for n, t in texts]
    return LoadedData("domain", examples, [str(path)], prompt or PromptFormat(kind="domain", prompt_template="",
                                                                              completion_template=""))


def _delimiter(header_line: str) -> str:
    """The header's delimiter among , ; tab | (Excel writes ; where the decimal mark is a comma)."""
    try:
        return csv.Sniffer().sniff(header_line, delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:  # one column, or nothing to tell them apart
        return ","


def _csv_records(path: Path):
    """Header, then (line, fields) of each non-blank record, with the header's delimiter."""
    lines = _lines(path)
    first = next(lines, None)
    if first is None or not first[1].strip():
        raise DataError("the CSV file has no header row", where=str(path),
                        fix="put the column names on the first line")
    delimiter = _delimiter(first[1])
    texts = (text for _, text in lines)
    reader = csv.reader(_chain_first(first[1], texts), delimiter=delimiter)
    yield [h.strip() for h in next(reader)]
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"malformed CSV ({exc})", where=f"{path}:{start}",
                            fix="quote fields that hold the delimiter, quotes or line breaks") from None
        if fields:
            yield start, fields


def _chain_first(first: str, rest):
    yield first
    yield from rest


def _csv_header(path: Path) -> list[str]:
    return next(_csv_records(path))


def _csv_text_column(path: Path) -> list[tuple[int, str]]:
    records = _csv_records(path)
    header = next(records)
    _check_unique(path, header, ("text",))
    column = header.index("text") if "text" in header else 0
    texts, empty = [], []
    for number, row in records:
        if len(row) != len(header):
            raise DataError(f"the row has {len(row)} fields and the header {len(header)}", where=f"{path}:{number}",
                            fix="quote fields that hold the delimiter, or fix that row")
        if row[column].strip():
            texts.append((number, row[column].strip()))
        else:
            empty.append(number)
    _warn_empty(path, empty)
    return texts


def _json_text(path: Path) -> list[tuple[int, str]]:
    with open(path, "rb") as handle:
        is_array = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")
    if is_array:
        text = _read_text(path)
        try:
            rows = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg})", where=f"{path}:{exc.lineno}",
                            fix="write a JSON array of objects or one object per line") from None
    else:
        rows = list(_jsonl_rows(path))
    out, empty = [], []
    for number, row in rows:
        if isinstance(row, str):
            value = row
        elif isinstance(row, dict) and row:
            name = "text" if "text" in row else next(iter(row))
            value = "" if row[name] is None else row[name]
            _check_text_value(value, name, f"{path}:{number}")
        else:
            raise DataError("expected an object with a 'text' field", where=f"{path}:{number}",
                            fix='write {"text": "..."} on each line')
        if str(value).strip():
            out.append((number, str(value).strip()))
        else:
            empty.append(number)
    _warn_empty(path, empty)
    return out


def _warn_empty(path: Path, lines: list[int]) -> None:
    if lines:
        log.warning("%s: %d row(s) with empty text were skipped (lines %s)", path, len(lines),
                    ", ".join(map(str, lines[:10])))


# ---------------------------------------------------------------- Autopilot tables
def read_table(folder: Path, files: list[Path], config, prompt: PromptFormat | None) -> LoadedData:
    tables = [p for p in files if p.suffix in (".csv", ".parquet")]
    if not tables:
        raise DataError("Autopilot-style data needs CSV or Parquet files and found none", where=str(folder),
                        fix="save the table as .csv (with a header) or .parquet")
    if prompt is None:
        prompt = PromptFormat(kind="table", prompt_template="{input}", completion_template="{output}",
                              demarcation=DEMARCATION_KEY if config.add_input_output_demarcation_key else "")
    examples = []
    for path in tables:
        for number, row in _table_rows(path):
            examples.append(Example(source=f"{path.name}:{number}", prompt=prompt.render_prompt(row),
                                    completion=prompt.render_completion(row)))
    return LoadedData("table", examples, [str(p) for p in tables], prompt)


def _table_rows(path: Path):
    if path.suffix == ".csv":
        records = _csv_records(path)
        columns = next(records)
        _check_columns(path, columns)
        for number, fields in records:
            if len(fields) != len(columns):
                raise DataError(f"the row has {len(fields)} fields and the header {len(columns)}",
                                where=f"{path}:{number}", fix="quote fields that hold the delimiter, or fix that row")
            row = dict(zip(columns, fields))
            yield number, _table_row(path, number, row["input"], row["output"])
        return
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for unreadable files
        raise DataError(f"cannot read the table ({exc})", where=str(path), fix="check the file is valid Parquet") from None
    columns = [str(c).strip() for c in frame.columns]
    _check_columns(path, columns)
    _check_parquet_types(path)
    frame.columns = columns
    for offset, (inp, out) in enumerate(zip(frame["input"], frame["output"])):
        yield offset + 1, _table_row(path, offset + 1, inp, out)


def _check_unique(path: Path, columns: list[str], names: tuple[str, ...]) -> None:
    """Two columns of one name would leave one of them unread."""
    twice = [name for name in names if columns.count(name) > 1]
    if twice:
        raise DataError(f"the column {twice[0]!r} appears {columns.count(twice[0])} times "
                        f"(columns: {', '.join(columns)})", where=str(path),
                        fix=f"keep one {twice[0]!r} column (rename or drop the others)")


def _check_parquet_types(path: Path) -> None:
    """Lists, structs, maps and bytes have no text form: str() would give Python's repr."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {field.name.strip(): field.type for field in pq.read_schema(path)}
    for name in ("input", "output"):
        kind = types[name]
        if pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            raise DataError(f"the column {name!r} holds {kind}, not text", where=str(path),
                            fix=f"store {name!r} as a string column")


def _check_columns(path: Path, columns: list[str]) -> None:
    _check_unique(path, columns, ("input", "output"))
    missing = [c for c in ("input", "output") if c not in columns]
    extra = [c for c in columns if c not in ("input", "output")]
    if missing or extra:
        problem = "; ".join(p for p in (f"missing column {', '.join(map(repr, missing))}" if missing else "",
                                        f"extra column {', '.join(map(repr, extra))}" if extra else "") if p)
        raise DataError(f"{problem} (found: {', '.join(columns)})", where=str(path),
                        fix="the table must have exactly two columns named input and output, separated "
                            "by , ; tab or |")


def _table_row(path: Path, number: int, inp, out) -> dict:
    for name, value in (("input", inp), ("output", out)):
        if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
            raise DataError(f"empty {name!r} value", where=f"{path}:{number}", fix="fill in or drop that row")
    return {"input": str(inp), "output": str(out)}
