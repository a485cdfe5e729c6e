"""Read a channel folder in one of the four formats JumpStart and Autopilot accept.

- instruction: *.jsonl rows + optional template.json ({"prompt", "completion"} with {field}s)
- chat: *.jsonl rows holding [{role, content}, ...] under dialog, messages or conversations
- domain: exactly one CSV, JSON/JSONL or TXT file of free text
- table: CSV or Parquet files with exactly the columns input and output (Autopilot)
Every problem is a DataError naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..prompt import DEMARCATION_KEY, DOLLY_TEMPLATE, PromptFormat, template_fields

CHAT_KEYS = ("dialog", "messages", "conversations")
CHAT_ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user",
                  "assistant": "assistant"}
DOMAIN_SUFFIXES = (".csv", ".json", ".jsonl", ".txt")
FLAN_TEMPLATE = {"prompt": "{prompt}", "completion": "{completion}"}


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
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))


def detect_format(folder: Path, config) -> str:
    if config.data_format != "auto":
        return config.data_format
    if config.instruction_tuned:
        return "instruction"
    if config.chat_dataset:
        return "chat"
    files = visible_files(folder)
    if any(p.suffix == ".parquet" for p in files):
        return "table"
    for path in files:
        if path.suffix == ".csv":
            header = _csv_header(path)
            if "input" in header or "output" in header:
                return "table"
    return "domain"


def read_channel(folder: Path, config, *, prompt: PromptFormat | None = None,
                 fmt: str | None = None) -> LoadedData:
    """Read every example of a channel. `prompt`/`fmt` come from the train channel for validation."""
    folder = Path(folder)
    files = visible_files(folder) if folder.is_dir() else []
    if not files:
        raise DataError("the channel is empty", where=str(folder),
                        fix="put the training files in this folder (see docs/data-formats.md)")
    fmt = fmt or detect_format(folder, config)
    reader = {"instruction": _read_instruction, "chat": _read_chat, "domain": _read_domain,
              "table": _read_table}[fmt]
    data = reader(folder, files, config, prompt)
    if not data.examples:
        raise DataError(f"no {fmt} rows were found", where=str(folder),
                        fix="add at least one non-empty row")
    return data


# ---------------------------------------------------------------- instruction
def _read_instruction(folder: Path, files: list[Path], config, prompt: PromptFormat | None) -> LoadedData:
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
        template = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"the template is not valid JSON (line {exc.lineno}: {exc.msg})", where=str(path),
                        fix='write {"prompt": "...{field}...", "completion": "{field}"}') from None
    if not isinstance(template, dict) or not {"prompt", "completion"} <= set(template):
        raise DataError("the template needs the keys 'prompt' and 'completion'", where=str(path),
                        fix='write {"prompt": "...{field}...", "completion": "{field}"}')
    for key in ("prompt", "completion"):
        try:
            template_fields(template[key])
        except ValueError as exc:
            raise DataError(f"template {key!r} is not a valid format string ({exc})", where=str(path),
                            fix="use {field} placeholders and double braces {{ }} for literal braces") from None
    return {"prompt": template["prompt"], "completion": template["completion"]}


def _default_template(rows) -> dict:
    first = rows[0][2] if rows else {}
    if "prompt" in first and "completion" in first:
        return FLAN_TEMPLATE
    return DOLLY_TEMPLATE


def _jsonl_rows(path: Path):
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
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


# ---------------------------------------------------------------- chat
def _read_chat(folder: Path, files: list[Path], config, prompt: PromptFormat | None) -> LoadedData:
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
def _read_domain(folder: Path, files: list[Path], config, prompt: PromptFormat | None) -> LoadedData:
    usable = [p for p in files if p.suffix in DOMAIN_SUFFIXES]
    if len(usable) != 1 or len(files) != 1:
        names = ", ".join(p.name for p in files)
        raise DataError(f"domain adaptation needs exactly one CSV, JSON or TXT file and found {len(files)} ({names})",
                        where=str(folder),
                        fix="combine the text into one file, or set instruction_tuned=True for *.jsonl + template.json")
    path = usable[0]
    if path.suffix == ".txt":
        texts = [(n, t.strip()) for n, t in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if t.strip()]
    elif path.suffix == ".csv":
        texts = _csv_text_column(path)
    else:
        texts = _json_text(path)
    examples = [Example(source=f"{path.name}:{n}", text=t) for n, t in texts]
    return LoadedData("domain", examples, [str(path)], prompt or PromptFormat(kind="domain", prompt_template="",
                                                                              completion_template=""))


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [h.strip() for h in next(csv.reader(handle), [])]


def _csv_text_column(path: Path) -> list[tuple[int, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if not header:
            raise DataError("the CSV file has no header row", where=str(path), fix="add a header such as 'text'")
        column = header.index("text") if "text" in header else 0
        return [(n, row[column].strip()) for n, row in enumerate(reader, start=2)
                if len(row) > column and row[column].strip()]


def _json_text(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg})", where=f"{path}:{exc.lineno}",
                            fix="write a JSON array of objects or one object per line") from None
    else:
        rows = list(_jsonl_rows(path))
    out = []
    for number, row in rows:
        if isinstance(row, str):
            value = row
        elif isinstance(row, dict) and row:
            value = row.get("text", next(iter(row.values())))
        else:
            raise DataError("expected an object with a 'text' field", where=f"{path}:{number}",
                            fix='write {"text": "..."} on each line')
        if str(value).strip():
            out.append((number, str(value).strip()))
    return out


# ---------------------------------------------------------------- Autopilot tables
def _read_table(folder: Path, files: list[Path], config, prompt: PromptFormat | None) -> LoadedData:
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
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(
            path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise DataError(f"cannot read the table ({exc})", where=str(path), fix="check the file is valid CSV or Parquet") from None
    columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ("input", "output") if c not in columns]
    extra = [c for c in columns if c not in ("input", "output")]
    if missing or extra:
        problem = "; ".join(p for p in (f"missing column {', '.join(map(repr, missing))}" if missing else "",
                                        f"extra column {', '.join(map(repr, extra))}" if extra else "") if p)
        raise DataError(f"{problem} (found: {', '.join(columns)})", where=str(path),
                        fix="the table must have exactly two columns named input and output")
    frame.columns = columns
    first_data_line = 2 if path.suffix == ".csv" else 1
    for offset, (inp, out) in enumerate(zip(frame["input"], frame["output"])):
        number = offset + first_data_line
        for name, value in (("input", inp), ("output", out)):
            if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
                raise DataError(f"empty {name!r} value", where=f"{path}:{number}", fix="fill in or drop that row")
        yield number, {"input": str(inp), "output": str(out)}
