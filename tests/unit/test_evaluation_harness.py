"""lm-evaluation-harness task YAMLs as task files (evaluation/harness.py): read offline with their
local data files, scored on the model in memory with the same numbers lm-eval's own `hf` model gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuneforge.errors import DataError
from tuneforge.evaluation.tasks import load_tasks

CHANNEL = Path(__file__).parent / "lm_eval_channel"  # trivia.yaml, qa.yaml and their data/ files


def _channel(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    shutil.copytree(CHANNEL, folder)
    return folder


def _lm_eval_hf(model_dir: Path, folder: Path, monkeypatch, tasks: list[str], **options) -> dict:
    """lm-eval's own run: its `hf` model on the folder's YAMLs, found by its TaskManager, run from
    the folder (the YAMLs' data_files are relative paths)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(folder)
    return lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=tasks,
                                   device="cpu", batch_size=8, bootstrap_iters=0,
                                   task_manager=TaskManager(include_path=str(folder), include_defaults=False),
                                   **options)


def without_max_new_tokens(model_dir: Path, copy: Path) -> Path:
    """A copy of the model without generation_config's max_new_tokens, for lm-eval's own `hf` runs:
    it passes max_length, which transformers lets max_new_tokens override (harness.py clears it so
    the task's max_gen_toks decides, as lm-eval means it to)."""
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "generation_config.json").read_text())
    config.pop("max_new_tokens", None)
    (copy / "generation_config.json").write_text(json.dumps(config))
    return copy


def test_yaml_tasks_and_their_data_files(tmp_path):
    folder = _channel(tmp_path)
    (folder / "mine.jsonl").write_text(json.dumps({"prompt": "Say yes.", "reference": "yes"}) + "\n")
    tasks = {task.name: task for task in load_tasks(folder)}
    assert {name: task.kind for name, task in tasks.items()} == {"mine": "generation", "qa": "lm_eval",
                                                                 "trivia": "lm_eval"}
    # the data files are read by the YAMLs (absolute now), not tasks of their own
    assert tasks["trivia"].config["dataset_kwargs"]["data_files"] == {"test": str(folder / "data" / "choice.jsonl")}
    assert tasks["qa"].config["dataset_kwargs"]["data_files"] == str(folder / "data" / "qa.jsonl")
    assert tasks["qa"].config["task"] == "qa"  # named after the file, as a .jsonl task is
    shutil.copy(folder / "mine.jsonl", folder / "qa.jsonl")  # now a .jsonl task named qa as well
    with pytest.raises(DataError, match="two task files are named qa"):
        load_tasks(folder)


@pytest.mark.slow
def test_yaml_task_scores_equal_lm_eval_own_run(tiny, tmp_path, monkeypatch):
    from tuneforge.evaluation.scoring import score_task
    from tuneforge.serve.loader import load_model
    from tuneforge.serve.settings import ServeSettings

    folder = _channel(tmp_path)
    model_dir = without_max_new_tokens(tiny("llama"), tmp_path / "model")
    # the references of the first two questions become the model's own greedy answers: exact match 0.5
    first = _lm_eval_hf(model_dir, folder, monkeypatch, ["tiny_qa"], log_samples=True)
    answers = {s["doc_id"]: s["filtered_resps"][0] for s in first["samples"]["tiny_qa"]}
    rows = [json.loads(line) for line in (folder / "data" / "qa.jsonl").read_text().splitlines()]
    for index, row in enumerate(rows):
        row["answer"] = answers[index] if index < 2 else "zzz never said"
    (folder / "data" / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))

    theirs = _lm_eval_hf(model_dir, folder, monkeypatch, ["tiny_trivia", "tiny_qa"])["results"]
    monkeypatch.chdir(tmp_path)  # ours resolves the data files against the YAML's folder, not the working one
    loaded = load_model(ServeSettings(model_dir=model_dir, dtype="float32"))
    ours = {task.name: score_task(task, loaded) for task in load_tasks(folder)}
    assert ours["qa"]["score"] == theirs["tiny_qa"]["exact_match,none"] == 0.5
    assert ours["qa"]["metric"] == "exact_match,none" and ours["qa"]["items"] == 4
    # the first metric of trivia.yaml's metric_list is acc_norm: the score; acc is reported beside it
    assert ours["trivia"]["score"] == pytest.approx(theirs["tiny_trivia"]["acc_norm,none"], abs=1e-9)
    assert ours["trivia"]["metrics"]["acc,none"] == pytest.approx(theirs["tiny_trivia"]["acc,none"], abs=1e-9)
    assert ours["trivia"]["metric"] == "acc_norm,none" and ours["trivia"]["items"] == 6


@pytest.mark.parametrize("edit,words", [
    (("dataset_path: json", "dataset_path: cais/mmlu"),
     "trivia.yaml: dataset_path: dataset_path 'cais/mmlu' is a dataset to download; the evaluation runs offline"),
    (("test: data/choice.jsonl", "test: data/missing.jsonl"),
     "trivia.yaml: dataset_kwargs.data_files: the data file data/missing.jsonl is not there"),
    (("task: tiny_trivia", "group: tiny"), "trivia.yaml: the YAML has no `task:` name"),
    (("output_type: multiple_choice", "output_type: [unclosed"), "trivia.yaml: lm-evaluation-harness cannot read"),
])
def test_a_yaml_that_needs_a_download_or_a_missing_file_fails_with_the_fix(tmp_path, edit, words):
    folder = _channel(tmp_path)
    yaml = folder / "trivia.yaml"
    yaml.write_text(yaml.read_text().replace(*edit))
    with pytest.raises(DataError) as err:
        load_tasks(folder)
    assert words in str(err.value)
    if "download" in words:
        assert "copy the split to a JSON Lines file beside the YAML and write `dataset_path: json`" in str(err.value)
