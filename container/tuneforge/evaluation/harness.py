"""lm-evaluation-harness task YAMLs as task files: read offline (their data in local files beside
the YAML), scored through lm-eval's Python API on a model already in memory (HFLM wraps it; no
server, no download). The headline score is the task's first metric (docs/evaluation.md)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError

HARNESS = "lm_eval"  # the Task kind of a YAML task
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")  # datasets' builders that read local files
BATCH_SIZE = 8
LOCAL_DATA_FIX = ("copy the split to a JSON Lines file beside the YAML and write `dataset_path: json` and "
                  "`dataset_kwargs: {data_files: {test: <file>.jsonl}}`")


def read_yaml_task(path: Path) -> tuple[dict, list[Path]]:
    """The YAML's config, its data files made absolute (they are relative to the YAML's folder), and
    those files."""
    config = _read_yaml(path)
    if not isinstance(config.get("task"), str):
        raise DataError("the YAML has no `task:` name (a group, or a file other YAMLs include?)", where=str(path),
                        fix="one task per YAML; name a file that others include without .yaml, or put it in a "
                        "subfolder")
    files = _localize_data(config, path)
    config["task"] = path.stem  # a task is named after its file, as a .jsonl task is
    return config, files


def _read_yaml(path: Path) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml  # the harness's own reader: include:, !function

    try:
        return load_yaml(path)
    except Exception as exc:  # YAML syntax, a missing include or !function module: all the user's file
        raise DataError(f"lm-evaluation-harness cannot read the YAML ({type(exc).__name__}: {exc})",
                        where=str(path), fix="fix the YAML; its include: files and !function modules are "
                        "read from its own folder") from None


def _localize_data(config: dict, path: Path) -> list[Path]:
    """Check the task reads only local files and rewrite them as absolute paths; the files read."""
    if "custom_dataset" in config:  # a !function of the user's, beside the YAML
        return []
    source = config.get("dataset_path")
    kwargs = dict(config.get("dataset_kwargs") or {})
    where = f"{path}: dataset_path"
    if source not in LOCAL_BUILDERS:
        folder = path.parent / str(source) if source else None
        if folder is None or not folder.is_dir():
            raise DataError(f"dataset_path {source!r} is a dataset to download; the evaluation runs offline",
                            where=where, fix=LOCAL_DATA_FIX)
        config["dataset_path"] = str(folder.resolve())
        return [p.resolve() for p in folder.rglob("*") if p.is_file()]
    if not kwargs.get("data_files"):
        raise DataError(f"dataset_path {source} needs dataset_kwargs.data_files", where=where, fix=LOCAL_DATA_FIX)
    files: list[Path] = []

    def local(name) -> str:
        file = path.parent / str(name)
        if not file.is_file():
            raise DataError(f"the data file {name} is not there ({file})", where=f"{path}: dataset_kwargs.data_files",
                            fix="put the file beside the YAML (paths are relative to its folder) or correct the name")
        files.append(file.resolve())
        return str(file.resolve())

    data = kwargs["data_files"]
    if isinstance(data, dict):
        kwargs["data_files"] = {split: [local(f) for f in v] if isinstance(v, list) else local(v)
                                for split, v in data.items()}
    else:
        kwargs["data_files"] = [local(f) for f in data] if isinstance(data, list) else local(data)
    config["dataset_kwargs"] = kwargs
    return files


def score_harness_task(task, loaded) -> dict | None:
    """{"kind", "items", "score" (the first metric), "metric", every metric lm-eval reported}; None on
    a rank other than a node's first, which lm-eval gives no results."""
    from lm_eval.models.huggingface import HFLM

    config = loaded.model.generation_config
    kept = config.max_new_tokens
    config.max_new_tokens = None  # else it overrides the length HFLM asks for (the task's max_gen_toks)
    try:
        return score_with(task, HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=BATCH_SIZE))
    finally:
        config.max_new_tokens = kept


def score_with(task, lm) -> dict | None:
    """The task's scores through an lm-eval `LM` (the model in memory, or a served model's)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the sources were checked local; this keeps it so
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    try:  # no reseeding: inside a job that would change the training's random state
        out = simple_evaluate(model=lm, tasks=[dict(task.config)], task_manager=TaskManager(include_defaults=False),
                              log_samples=False, bootstrap_iters=0, random_seed=None, numpy_random_seed=None,
                              torch_random_seed=None)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:  # the task's config or data, not the model
        raise DataError(f"lm-evaluation-harness could not run the task ({type(exc).__name__}: {exc})",
                        where=str(task.path), fix="check the YAML against lm-eval's task guide and its data "
                        "file") from None
    if out is None:  # lm-eval answers on LOCAL_RANK 0 only; this rank ran the same passes (ZeRO-3 lockstep)
        return None
    return harness_result(task, out["results"][task.name])


def harness_result(task, reported: dict) -> dict:
    metrics = {k: v for k, v in reported.items() if "," in k and "_stderr," not in k}
    listed = task.config.get("metric_list") or []
    first = listed[0].get("metric") if listed and isinstance(listed[0], dict) else None
    key = next((k for k in metrics if first is None or k.split(",")[0] == first), None)
    if key is None or not isinstance(metrics[key], (int, float)):
        raise DataError(f"lm-evaluation-harness reported no number for {first or 'any metric'} "
                        f"(it reported: {', '.join(metrics) or 'nothing'})", where=str(task.path),
                        fix="make the first entry of metric_list a metric the task computes")
    return {"kind": HARNESS, "items": reported.get("sample_len"), "score": float(metrics[key]), "metric": key,
            "metrics": metrics}
