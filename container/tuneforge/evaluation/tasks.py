"""Task files: each `<name>.jsonl` (or lm-evaluation-harness `<name>.yaml`, harness.py) of a tasks
folder is one task, named after the file. A .jsonl file a YAML reads as its data is not a task.

Two kinds of items, one kind per .jsonl file:
- generation: `{"prompt": str, "reference": str}` (or `"messages": [...]`, or the fine-tune's
  template fields such as `"instruction"`, `"context"`), scored by exact match and ROUGE-L of the
  greedy answer;
- multiple choice: `{"question": str, "choices": [str, ...], "answer": index}`, scored by the
  log-likelihood of each choice after "Question: <question>\\nAnswer:", as lm-evaluation-harness
  scores MMLU-style tasks (accuracy, and accuracy normalized by the choice's length).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

GENERATION, MULTIPLE_CHOICE = "generation", "multiple_choice"
RESERVED_NAMES = {"loss": "validation loss"}  # [metric] final_eval_loss= is that line (contract.METRIC_DEFINITIONS)


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    items: tuple[dict, ...]
    path: Path
    config: dict | None = field(default=None, compare=False)  # an lm-eval YAML task's config (harness.py)
    data_files: tuple[Path, ...] = ()                         # the files that YAML reads


def load_tasks(folder: Path) -> list[Task]:
    folder = Path(folder)
    yamls = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []
    jsonl = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not yamls and not jsonl:
        raise DataError(f"no task files (*.jsonl, lm-eval *.yaml) in {folder}", where=str(folder),
                        fix="put one JSON Lines file (or lm-evaluation-harness YAML) per task there (docs/evaluation.md)")
    harness = [load_yaml_task(path) for path in yamls]
    data = {file for task in harness for file in task.data_files}
    tasks = harness + [load_task(path) for path in jsonl if path.resolve() not in data]
    names = [task.name for task in tasks]
    for task in tasks:
        if task.name in RESERVED_NAMES:
            raise DataError(f"a task named {task.name} would print the line final_eval_{task.name}, the job's "
                            f"{RESERVED_NAMES[task.name]}", where=str(task.path), fix="rename the file")
        if names.count(task.name) > 1:
            raise DataError(f"two task files are named {task.name}", where=str(folder),
                            fix="rename one: a task is named after its file, without the extension")
    return sorted(tasks, key=lambda task: task.name)


def load_yaml_task(path: Path) -> Task:
    from .harness import HARNESS, read_yaml_task  # lm_eval is imported only for a folder with YAML tasks

    config, files = read_yaml_task(path)
    return Task(path.stem, HARNESS, (), path, config=config, data_files=tuple(files))


def load_task(path: Path) -> Task:
    items, kind = [], None
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            item = _parse(line, where)
            item_kind = _kind(item, where)
            if kind is not None and item_kind != kind:
                raise DataError(f"a {item_kind} item in a file of {kind} items", where=where,
                                fix="keep one kind of item per task file")
            kind = item_kind
            items.append(item)
    if not items:
        raise DataError("the task file holds no items", where=str(path), fix="add one JSON object per line")
    return Task(path.stem, kind, tuple(items), path)


def _parse(line: str, where: str) -> dict:
    try:
        item = json.loads(line)
    except ValueError as exc:
        raise DataError(f"not JSON ({exc})", where=where, fix="write one JSON object per line") from None
    if not isinstance(item, dict):
        raise DataError("the line is not a JSON object", where=where, fix="write one JSON object per line")
    return item


def _kind(item: dict, where: str) -> str:
    if "choices" in item:
        choices, answer = item.get("choices"), item.get("answer")
        if not isinstance(item.get("question"), str):
            raise DataError("`question` must be a string", where=where, fix='{"question": "...", "choices": '
                            '["...", "..."], "answer": 0}')
        if not (isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) and c for c in choices)):
            raise DataError("`choices` must be a list of at least two non-empty strings", where=where,
                            fix='"choices": ["yes", "no"]')
        if not (isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices)):
            raise DataError(f"`answer` must be the index of the right choice, 0 to {len(choices) - 1}, got "
                            f"{answer!r}", where=where, fix='"answer": 0 for the first choice')
        return MULTIPLE_CHOICE
    if not isinstance(item.get("reference"), str):
        raise DataError("an item needs `reference` (a generation item: the expected answer) or `choices` and "
                        "`answer` (a multiple-choice item)", where=where,
                        fix='{"prompt": "...", "reference": "..."} or {"question": "...", "choices": [...], "answer": 0}')
    prompt_fields = [k for k in item if k != "reference"]
    if not prompt_fields:
        raise DataError("a generation item needs `prompt`, `messages` or the template's fields", where=where,
                        fix='{"prompt": "...", "reference": "..."}')
    return GENERATION
