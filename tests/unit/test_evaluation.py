"""`tuneforge evaluate`: task files, scores equal to lm-evaluation-harness's `hf` model on the same
items, generation items through the model's template, and the gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.errors import DataError
from tuneforge.evaluation.tasks import load_tasks

LM_EVAL_TASKS = Path(__file__).parents[1] / "serve" / "lm_eval_tasks"


def _choice_items(folder: Path) -> Path:
    """The lm-eval test task's items (tests/serve/lm_eval_tasks/choice.jsonl) as a tuneforge task."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (LM_EVAL_TASKS / "choice.jsonl").read_text().splitlines() if line.strip()]
    (folder / "choice.jsonl").write_text("".join(json.dumps({"question": r["question"], "choices": r["choices"],
                                                             "answer": r["label"]}) + "\n" for r in rows))
    return folder


def _loaded(model_dir: Path):
    from tuneforge.serve.loader import load_model
    from tuneforge.serve.settings import ServeSettings

    return load_model(ServeSettings(model_dir=model_dir, dtype="float32"))


@pytest.mark.slow
def test_multiple_choice_scores_equal_lm_eval_hf_model(tiny, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from tuneforge.evaluation.scoring import score_task

    ours = score_task(load_tasks(_choice_items(tmp_path / "tasks"))[0], _loaded(tiny("llama")))
    theirs = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tiny('llama')},dtype=float32",
                                     tasks=["tuneforge_tiny_choice"], log_samples=True, device="cpu",
                                     task_manager=TaskManager(include_path=str(LM_EVAL_TASKS)))
    samples = sorted(theirs["samples"]["tuneforge_tiny_choice"], key=lambda s: s["doc_id"])
    for detail, sample in zip(ours["details"], samples, strict=True):
        assert detail["loglikelihoods"] == pytest.approx([r[0] for r in sample["filtered_resps"]], abs=1e-4)
    assert ours["acc"] == pytest.approx(theirs["results"]["tuneforge_tiny_choice"]["acc,none"], abs=1e-9)
    assert 0 <= ours["acc_norm"] <= 1 and ours["score"] == ours["acc"]


def test_generation_items_are_scored_on_greedy_answers_through_the_template(tiny, tmp_path):
    from tuneforge.evaluation.scoring import render_item, score_task
    from tuneforge.llm import metrics

    loaded = _loaded(tiny("llama"))
    prompt = render_item({"prompt": "What color is snow?"}, loaded, "x")
    own = metrics.generate(loaded.model, loaded.tokenizer, [prompt], seq2seq=False, max_new_tokens=8,
                           max_input_length=512)[0]
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "qa.jsonl").write_text(json.dumps({"prompt": "What color is snow?", "reference": own}) + "\n" +
                                     json.dumps({"prompt": "What color is snow?", "reference": "zzz qqq"}) + "\n")
    result = score_task(load_tasks(folder)[0], loaded, max_new_tokens=8)
    assert result["kind"] == "generation" and result["items"] == 2
    assert result["exact_match"] == 0.5  # the model's own answer once, a reference it never says once
    assert result["details"][0]["answer"] == own and result["rougeL"] == pytest.approx(0.5)  # 1 and 0


@pytest.mark.parametrize("lines,words", [
    (['{"question": "q", "choices": ["a"], "answer": 0}'], "at least two non-empty strings"),
    (['{"question": "q", "choices": ["a", "b"], "answer": 2}'], "`answer` must be the index of the right choice, 0 to 1"),
    (['{"prompt": "q"}'], "needs `reference`"),
    (['{"prompt": "q", "reference": "a"}', '{"question": "q", "choices": ["a", "b"], "answer": 0}'],
     "a multiple_choice item in a file of generation items"),
    (["not json"], "not JSON"),
])
def test_a_bad_task_file_names_file_and_line(tmp_path, lines, words):
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        load_tasks(tmp_path)
    assert words in str(err.value) and f"t.jsonl:{len(lines)}" in str(err.value)


def test_the_cli_prints_the_table_and_the_gate_fails_the_run(tiny, tmp_path):
    tasks = _choice_items(tmp_path / "tasks")
    command = [sys.executable, "-m", "tuneforge.cli", "evaluate", "--model-dir", str(tiny("llama")),
               "--tasks", str(tasks), "--compare-to", str(tiny("gpt2")), "--json", str(tmp_path / "scores.json")]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    passed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.startswith("| task | kind | items | score | compared model | change |")
    scores = json.loads((tmp_path / "scores.json").read_text())
    score = scores["model"]["choice"]["score"]
    failed = subprocess.run(command + ["--min-score", f"choice={score + 0.01}"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert failed.returncode == 1
    assert f"evaluate: gate failed: task choice: score {score:.4f} is below the minimum {score + 0.01:g}" in failed.stderr


def _metric_definitions(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", "metric-definitions", *args], capture_output=True,
                          text=True, timeout=120)


def test_metric_definitions_for_the_tasks_match_their_lines_only(tmp_path):
    import contextlib
    import io
    import re

    from tuneforge.contract import METRIC_DEFINITIONS
    from tuneforge.job.metric_lines import print_metric

    for name in ("qa.v2", "qa_v2", "qa"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"prompt": "q", "reference": "a"}) + "\n")
    out = _metric_definitions("--tasks", str(tmp_path))
    assert out.returncode == 0, out.stderr
    definitions = json.loads(out.stdout)
    assert definitions[:len(METRIC_DEFINITIONS)] == METRIC_DEFINITIONS
    tasks = definitions[len(METRIC_DEFINITIONS):]
    assert [d["Name"] for d in tasks] == ["base:eval_qa", "final:eval_qa", "base:eval_qa.v2", "final:eval_qa.v2",
                                          "base:eval_qa_v2", "final:eval_qa_v2"]
    # the lines the job prints (recipe._score_tasks through metrics.print_metric), each found by its own regex only
    lines = {}
    for number, (stage, name) in enumerate((s, n) for n in ("qa", "qa.v2", "qa_v2") for s in ("base", "final")):
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            print_metric(f"{stage}_eval_{name}", number / 10)
        lines[f"{stage}:eval_{name}"] = printed.getvalue()
    for definition in tasks:
        found = {key: re.findall(definition["Regex"], line) for key, line in lines.items()}
        value = lines[definition["Name"]].split("=")[1].strip()
        assert {key: v for key, v in found.items() if v} == {definition["Name"]: [value]}
    only = _metric_definitions("--tasks", str(tmp_path), "--tasks-only")
    assert json.loads(only.stdout) == tasks


def test_metric_definitions_past_sagemaker_limit_and_a_reserved_name(tmp_path):
    from tuneforge.contract import METRIC_DEFINITIONS, SFT_METRIC_DEFINITIONS

    tasks = (40 - len(METRIC_DEFINITIONS)) // 2 + 1  # one task (two definitions) too many
    for number in range(tasks):
        (tmp_path / f"t{number}.jsonl").write_text(json.dumps({"prompt": "q", "reference": "a"}) + "\n")
    refused = _metric_definitions("--tasks", str(tmp_path))
    assert refused.returncode == 2
    total = len(METRIC_DEFINITIONS) + 2 * tasks
    assert f"{total} definitions, more than the 40 a SageMaker training job takes; pass --method sft" in refused.stderr
    assert len(json.loads(_metric_definitions("--tasks", str(tmp_path), "--tasks-only").stdout)) == 2 * tasks
    sft = json.loads(_metric_definitions("--tasks", str(tmp_path), "--method", "sft").stdout)  # no reward lines
    assert len(sft) == len(SFT_METRIC_DEFINITIONS) + 2 * tasks and not any("reward" in d["Name"] for d in sft)
    assert json.loads(_metric_definitions("--method", "dpo").stdout) == METRIC_DEFINITIONS
    (tmp_path / "loss.jsonl").write_text(json.dumps({"prompt": "q", "reference": "a"}) + "\n")
    with pytest.raises(DataError, match="loss.jsonl: a task named loss would print the line final_eval_loss, "
                       "the job's validation loss. Fix: rename the file"):
        load_tasks(tmp_path)


def test_the_gate_refuses_a_loss_it_cannot_measure():
    from tuneforge.evaluation.gate import failures

    assert failures({"a": 0.5, "b": 0.9}, {"a": 0.51, "b": 0.8}, {}, 0.02) == []
    assert failures({"a": 0.5}, {"a": 0.53}, {}, 0.02) == [
        "task a: score fell from 0.5300 to 0.5000, more than the allowed 0.02"]
    refused = failures({"a": 0.5, "b": 0.9}, {"a": 0.5}, {}, 0.02)  # b has no base score (e.g. ZeRO-3)
    assert refused == ["task b: scored 0.9000 but has no base score to measure a loss against, and the largest "
                       "allowed loss is 0.02 (metrics.json says why: evaluation_skipped, evaluation_unscored)"]
    assert failures({"a": 0.5, "b": 0.9}, {"a": 0.5}, {}, None) == []  # no regression limit: nothing to measure
