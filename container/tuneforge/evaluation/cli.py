"""`tuneforge evaluate`: a model folder's scores on a tasks folder, beside another model's, with an
optional gate (exit 1 when a task scores too low or lost too much against the other model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import HyperparameterError, UserError
from .scoring import score_task
from .tasks import load_tasks


def parse_thresholds(text: str) -> dict[str, float]:
    """"tickets=0.9,general=0.5" -> {"tickets": 0.9, "general": 0.5}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise HyperparameterError(f"{part!r} is not task=score", where="--min-score",
                                      fix="write task=number pairs, e.g. tickets=0.9,general=0.5") from None
    return out


def evaluate(model_dir: Path, tasks_dir: Path, max_new_tokens: int = 64) -> dict[str, dict]:
    from ..serve.loader import load_model
    from ..serve.settings import ServeSettings

    tasks = load_tasks(tasks_dir)  # before the model: a bad task file fails at once
    loaded = load_model(ServeSettings(model_dir=Path(model_dir), dtype="float32"))
    return {task.name: score_task(task, loaded, max_new_tokens=max_new_tokens) for task in tasks}


def gate(results: dict, baseline: dict | None, min_score: dict[str, float], max_regression: float | None) -> list[str]:
    """The failures, each naming the task, its scores and the threshold; [] when the gate passes."""
    failures = []
    for name, limit in min_score.items():
        if name not in results:
            failures.append(f"task {name!r} has a minimum score but no task file (tasks: {', '.join(results)})")
        elif results[name]["score"] < limit:
            failures.append(f"task {name}: score {results[name]['score']:.4f} is below the minimum {limit:g}")
    if baseline is not None and max_regression is not None:
        for name, after in results.items():
            before = baseline[name]["score"]
            if before - after["score"] > max_regression:
                failures.append(f"task {name}: score fell from {before:.4f} to {after['score']:.4f}, more than "
                                f"the allowed {max_regression:g}")
    return failures


def table(results: dict, baseline: dict | None) -> str:
    """Markdown: each task's score, and beside it the compared model's and the change."""
    columns = ["task", "kind", "items", "score"] + (["compared model", "change"] if baseline else [])
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, r in results.items():
        cells = [name, r["kind"], str(r["items"]), f"{r['score']:.4f}"]
        if baseline:
            before = baseline[name]["score"]
            cells += [f"{before:.4f}", f"{r['score'] - before:+.4f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main(args) -> int:
    try:
        thresholds = parse_thresholds(args.min_score or "")
        results = evaluate(Path(args.model_dir), Path(args.tasks), args.max_new_tokens)
        baseline = evaluate(Path(args.compare_to), Path(args.tasks), args.max_new_tokens) if args.compare_to else None
    except UserError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    print(table(results, baseline), end="")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": results, "compared": baseline}, indent=2) + "\n")
    failures = gate(results, baseline, thresholds, args.max_regression)
    for failure in failures:
        print(f"evaluate: gate failed: {failure}", file=sys.stderr)
    return 1 if failures else 0
