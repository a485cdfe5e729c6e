"""`tuneforge evaluate`: a model folder's (or a served model's) scores on a tasks folder, beside
another model's, with an optional gate (exit 1 when a task scores too low or lost too much against
the other model); `tuneforge metric-definitions`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import HyperparameterError, UserError
from ..hyperparameters import parse_thresholds
from .gate import failures
from .scoring import score_task
from .tasks import load_tasks


def evaluate(model_dir: str | Path, tasks_dir: Path, max_new_tokens: int = 64) -> dict[str, dict]:
    """Every task's scores on a model folder, or on a served model (an http(s):// URL; endpoint.py)."""
    from .endpoint import is_url, score_endpoint

    tasks = load_tasks(tasks_dir)  # before the model: a bad task file fails at once
    if is_url(model_dir):
        return score_endpoint(str(model_dir), tasks, max_new_tokens=max_new_tokens)
    from ..serve.loader import load_model
    from ..serve.settings import ServeSettings

    loaded = load_model(ServeSettings(model_dir=Path(model_dir), dtype="float32"))
    return {task.name: score_task(task, loaded, max_new_tokens=max_new_tokens) for task in tasks}


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
        if thresholds is None:
            raise HyperparameterError(f"{args.min_score!r} is not task=score pairs", where="--min-score",
                                      fix="write e.g. tickets=0.9,general=0.5")
        results = evaluate(args.model_dir, Path(args.tasks), args.max_new_tokens)
        baseline = evaluate(args.compare_to, Path(args.tasks), args.max_new_tokens) if args.compare_to else None
    except UserError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    print(table(results, baseline), end="")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": results, "compared": baseline}, indent=2) + "\n")
    before = {name: r["score"] for name, r in baseline.items()} if baseline else None
    refused = failures({name: r["score"] for name, r in results.items()}, before, thresholds, args.max_regression)
    for failure in refused:
        print(f"evaluate: gate failed: {failure}", file=sys.stderr)
    return 1 if refused else 0


def metric_definitions_main(args) -> int:
    """`tuneforge metric-definitions`: the JSON list for SageMaker's MetricDefinitions, the job's fixed
    lines and, with --tasks, each task's base_eval_<task>/final_eval_<task> lines."""
    from ..contract import SAGEMAKER_MAX_METRIC_DEFINITIONS, metric_definitions, task_metric_definitions

    try:
        names = [task.name for task in load_tasks(Path(args.tasks))] if args.tasks else []
    except UserError as exc:
        print(f"metric-definitions: {exc}", file=sys.stderr)
        return 2
    definitions = ([] if args.tasks_only else metric_definitions(args.method)) + task_metric_definitions(names)
    if len(definitions) > SAGEMAKER_MAX_METRIC_DEFINITIONS:
        print(f"metric-definitions: {len(definitions)} definitions, more than the {SAGEMAKER_MAX_METRIC_DEFINITIONS} "
              "a SageMaker training job takes; pass --method sft (no reward lines), --tasks-only (the tasks' alone) or fewer tasks", file=sys.stderr)
        return 2
    print(json.dumps(definitions, indent=2))
    return 0
