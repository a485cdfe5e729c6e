"""Preference data: JSON Lines rows that pair a chosen and a rejected answer to one prompt (dpo,
orpo, simpo), or unpaired rows that label one answer desirable or not (kto).

- paired: {"prompt": str, "chosen": str, "rejected": str}
- conversational: {"chosen": [messages], "rejected": [messages]}: the same turns up to a last
  assistant turn that differs (an optional "prompt": [messages] holds the shared turns instead)
- unpaired: {"prompt": str, "completion": str, "label": true|false}, or conversational:
  {"prompt": [turns], "completion": [the assistant turn], "label": true|false}
Rows are kept as text here; llm/preference.py renders them with the prompt format and chat
template the job uses (the tokenizer is loaded later). Every problem names file:line and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .prompt import DEMARCATION_KEY, PromptFormat, template_fields
from .formats import Example, LoadedData, _check_text_value, _jsonl_rows, _messages, _read_template

ROW_SHAPES = ('{"prompt": "...", "chosen": "...", "rejected": "..."} or '
              '{"chosen": [turns], "rejected": [turns]}')
UNPAIRED_SHAPE = ('{"prompt": "...", "completion": "...", "label": true} or '
                  '{"prompt": [turns], "completion": [{"role": "assistant", "content": "..."}], "label": true}')


@dataclass
class PreferenceExample(Example):
    """One pair. Paired rows: `prompt` (raw text), `completion` = chosen, `rejected`. Conversational
    rows: `messages` = the shared turns, `chosen_turn`/`rejected_turn` the two last assistant turns."""
    rejected: str = ""
    label: bool | None = None  # unpaired rows: whether `completion` is desirable
    rendered: bool = False  # `prompt` already went through the channel's template.json
    chosen_turn: dict | None = None
    rejected_turn: dict | None = None

    @property
    def conversational(self) -> bool:
        return self.chosen_turn is not None


def is_preference_row(row: dict) -> bool:
    return isinstance(row, dict) and "chosen" in row and "rejected" in row


def sniff_preference(files: list[Path]) -> str | None:
    """"preference" when the channel's first JSON Lines row holds a chosen and a rejected answer,
    "unpaired" when it holds a prompt, a completion and a true/false label; else None."""
    for path in files:
        if path.suffix != ".jsonl":
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                row = json.loads(next((text for text in handle if text.strip()), "null"))
        except (json.JSONDecodeError, OSError):
            return None
        if is_preference_row(row):
            return "preference"
        if isinstance(row, dict) and {"prompt", "completion"} <= set(row) and isinstance(row.get("label"), bool):
            return "unpaired"
        return None
    return None


def read_preference(folder: Path, files: list[Path], config, prompt: PromptFormat | None) -> LoadedData:
    jsonl = [p for p in files if p.suffix == ".jsonl"]
    if not jsonl:
        raise DataError("preference data needs *.jsonl files and found none", where=str(folder),
                        fix=f"save one pair per line in a .jsonl file: {ROW_SHAPES}")
    template = _read_template(folder, files) if prompt is None else None
    prompt = _text_format(template, config) if template else prompt
    examples = [_pair(row, f"{path}:{line}", f"{path.name}:{line}", _templated(row, prompt, f"{path}:{line}", template))
                for path in jsonl for line, row in _jsonl_rows(path)]
    _check_one_shape(examples, ROW_SHAPES)
    if prompt is None:
        prompt = (PromptFormat(kind="chat", prompt_template="", completion_template="",
                               chat_template=config.chat_template or None) if examples[0].conversational else
                  _text_format(None, config))
    return LoadedData("preference", examples, [str(p) for p in jsonl], prompt)


def _text_format(template: dict | None, config) -> PromptFormat:
    """Text prompts: the channel's template.json prompt (as instruction tuning), else {prompt}; the
    demarcation key after it unless turned off."""
    return PromptFormat(kind="instruction", prompt_template=template["prompt"] if template else "{prompt}",
                        completion_template="{completion}",
                        demarcation=DEMARCATION_KEY if config.add_input_output_demarcation_key else "")


def _templated(row: dict, prompt: PromptFormat | None, where: str, required) -> str | None:
    """The row's prompt rendered from its fields by a template other than {prompt} (template.json, or
    the training channel's for validation rows holding its fields); None where the row's own
    "prompt" text is rendered later (conversations, {prompt}, a saved template the row lacks fields for)."""
    from .registry import FORMATS  # the registry's preference formats read rows with this module

    fields = template_fields(prompt.prompt_template) if prompt and not FORMATS[prompt.kind].conversational else []
    if fields in ([], ["prompt"]) or isinstance(row.get("chosen"), list):
        return None
    missing = [name for name in fields if name not in row]
    if missing and required:
        raise DataError(f"row has no field {missing[0]!r}, which template.json names", where=where,
                        fix=f"add {missing[0]!r} to every row or change template.json (fields: {', '.join(fields)})")
    if missing:
        return None
    for name in fields:
        _check_text_value(row[name], name, where)
    return prompt.render_prompt(row)


def read_unpaired(folder: Path, files: list[Path], config, prompt: PromptFormat | None) -> LoadedData:
    """KTO's rows: one answer each, labelled desirable (true) or not (false)."""
    jsonl = [p for p in files if p.suffix == ".jsonl"]
    examples = [_unpaired(row, f"{path}:{line}", f"{path.name}:{line}")
                for path in jsonl for line, row in _jsonl_rows(path)]
    if examples and len({e.label for e in examples}) < 2:
        raise DataError(f"every row is labelled {examples[0].label}: KTO needs desirable and undesirable answers",
                        where=str(folder), fix="add rows with the other label (true = desirable, false = not)")
    _check_one_shape(examples, UNPAIRED_SHAPE)
    if prompt is None and examples and examples[0].conversational:
        prompt = PromptFormat(kind="chat", prompt_template="", completion_template="",
                              chat_template=config.chat_template or None)
    prompt = prompt or PromptFormat(kind="instruction", prompt_template="{prompt}", completion_template="{completion}",
                                    demarcation=DEMARCATION_KEY if config.add_input_output_demarcation_key else "")
    return LoadedData("unpaired", examples, [str(p) for p in jsonl], prompt)


def _check_one_shape(examples: list, shapes: str) -> None:
    """Text rows and conversations are rendered differently: one channel holds one of them."""
    first = next((e for e in examples if e.conversational != examples[0].conversational), None)
    if first is not None:
        raise DataError("the rows mix text rows and conversations", where=first.source,
                        fix=f"write every row in one shape: {shapes}")


def _unpaired(row: dict, where: str, source: str) -> PreferenceExample:
    for key in ("prompt", "completion", "label"):
        if key not in row:
            raise DataError(f"the row has no {key!r}", where=where, fix=f"write every row as {UNPAIRED_SHAPE}")
    if not isinstance(row["label"], bool):
        raise DataError(f"'label' must be true or false, not {row['label']!r}", where=where,
                        fix="write true for a desirable answer, false for an undesirable one")
    if isinstance(row["prompt"], list) or isinstance(row["completion"], list):
        return _unpaired_conversation(row, where, source)
    for key in ("prompt", "completion"):
        if not isinstance(row[key], str):
            raise DataError(f"{key!r} must be a string", where=where, fix=f"write every row as {UNPAIRED_SHAPE}")
    if not row["completion"].strip():
        raise DataError("'completion' is empty", where=where, fix="give the answer some text, or drop the row")
    return PreferenceExample(source=source, prompt=row["prompt"], completion=row["completion"], label=row["label"])


def _unpaired_conversation(row: dict, where: str, source: str) -> PreferenceExample:
    """TRL's conversational unpaired row: the prompt's turns, then one assistant turn as completion."""
    completion = row["completion"]
    if not isinstance(row["prompt"], list) or not isinstance(completion, list) or len(completion) != 1:
        raise DataError("a conversational row needs 'prompt' as a list of turns and 'completion' as a list of the "
                        "one assistant turn", where=where, fix=f"write every row as {UNPAIRED_SHAPE}")
    turn = completion[0]
    if not isinstance(turn, dict) or turn.get("role") != "assistant" or not str(turn.get("content") or "").strip():
        raise DataError("'completion' must hold one assistant turn with some text", where=where,
                        fix='write it as [{"role": "assistant", "content": "..."}]')
    turns = _messages({"messages": row["prompt"] + completion}, where)
    answer = turns[-1]
    return PreferenceExample(source=source, messages=turns[:-1], completion=answer["content"], label=row["label"],
                             chosen_turn=answer)


def _pair(row: dict, where: str, source: str, rendered: str | None = None) -> PreferenceExample:
    for key in ("chosen", "rejected"):
        if key not in row:
            raise DataError(f"the row has no {key!r} (keys: {', '.join(sorted(row)) or 'none'})", where=where,
                            fix=f"write every row as {ROW_SHAPES}")
    if isinstance(row["chosen"], list) or isinstance(row["rejected"], list):
        return _conversation_pair(row, where, source)
    if rendered is None and "prompt" not in row:
        raise DataError("the row has no 'prompt'", where=where, fix=f"write every row as {ROW_SHAPES}")
    texts = {"prompt": rendered}
    for key in ("prompt", "chosen", "rejected") if rendered is None else ("chosen", "rejected"):
        value = row[key]
        if not isinstance(value, str):
            raise DataError(f"{key!r} must be a string, not {type(value).__name__}", where=where,
                            fix=f"write every row as {ROW_SHAPES}")
        if key != "prompt" and not value.strip():
            raise DataError(f"{key!r} is empty", where=where, fix="give both answers some text, or drop the row")
        texts[key] = value
    _check_different(texts["chosen"], texts["rejected"], where)
    return PreferenceExample(source=source, prompt=texts["prompt"], completion=texts["chosen"],
                             rejected=texts["rejected"], rendered=rendered is not None)


def _conversation_pair(row: dict, where: str, source: str) -> PreferenceExample:
    shared = None
    if isinstance(row.get("prompt"), list):
        shared = _messages({"messages": row["prompt"] + [{"role": "assistant", "content": "-"}]}, where)[:-1]
    sides = {}
    for key in ("chosen", "rejected"):
        turns = row[key]
        if not isinstance(turns, list) or not turns:
            raise DataError(f"{key!r} must be a non-empty list of turns", where=where,
                            fix=f"write every row as {ROW_SHAPES}")
        sides[key] = _messages({"messages": (shared or []) + turns}, where)
        if sides[key][-1]["role"] != "assistant":
            raise DataError(f"the last turn of {key!r} is not the assistant's answer", where=where,
                            fix="end both conversations with the assistant turn being compared")
        if not sides[key][-1]["content"].strip():
            raise DataError(f"the last assistant turn of {key!r} is empty", where=where,
                            fix="give both answers some text, or drop the row")
    if sides["chosen"][:-1] != sides["rejected"][:-1]:
        raise DataError("'chosen' and 'rejected' differ before their last assistant turn: the prompts must be the "
                        "same", where=where, fix="keep the same turns in both and change only the last answer")
    _check_different(sides["chosen"][-1]["content"], sides["rejected"][-1]["content"], where)
    return PreferenceExample(source=source, messages=sides["chosen"][:-1], completion=sides["chosen"][-1]["content"],
                             rejected=sides["rejected"][-1]["content"], chosen_turn=sides["chosen"][-1],
                             rejected_turn=sides["rejected"][-1])


def _check_different(chosen: str, rejected: str, where: str) -> None:
    if chosen.strip() == rejected.strip():
        raise DataError("'chosen' and 'rejected' are the same answer, so there is no preference to learn",
                        where=where, fix="fix the rejected answer or drop the row")
