"""`tuneforge evaluate --model-dir http://...`: a real `serve` process on the tiny instruction model
(Dolly template) scores the same as its model folder: multiple choice through /tokenize and
/v1/completions echo+logprobs (within 1e-4), generation through /invocations and
/v1/chat/completions (the same answers, exactly)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve.conftest import free_port, running

LM_EVAL_TASKS = Path(__file__).parent / "lm_eval_tasks"


@pytest.fixture(scope="module")
def instruct_server(model_dirs, tmp_path_factory):
    with running(model_dirs["instruct"], tmp_path_factory.mktemp("evaluate-endpoint")) as server:
        yield server


def _tasks(folder: Path, first_reference: str = "white") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (LM_EVAL_TASKS / "choice.jsonl").read_text().splitlines() if line.strip()]
    (folder / "choice.jsonl").write_text("".join(json.dumps({"question": r["question"], "choices": r["choices"],
                                                             "answer": r["label"]}) + "\n" for r in rows))
    generation = [
        {"prompt": "What color is snow?", "reference": first_reference},  # rendered with the Dolly template
        {"instruction": "Name the color.", "context": "A lime.", "reference": "green"},  # the template's fields
        {"messages": [{"role": "user", "content": "What color is the sky?"}], "reference": "blue"},
        {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a fruit."}],
         "reference": "apple"}]
    (folder / "answers.jsonl").write_text("".join(json.dumps(item) + "\n" for item in generation))
    return folder


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", "evaluate", "--max-new-tokens", "16", *args],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"))


def test_endpoint_scores_equal_the_folder_scores(instruct_server, model_dirs, tmp_path):
    tasks = _tasks(tmp_path / "tasks")
    first = _evaluate("--model-dir", str(model_dirs["instruct"]), "--tasks", str(tasks), "--json",
                      str(tmp_path / "first.json"))
    assert first.returncode == 0, first.stderr
    # the first reference becomes the folder's own answer: an exact match both ways must find it
    own = json.loads((tmp_path / "first.json").read_text())["model"]["answers"]["details"][0]["answer"]
    _tasks(tasks, first_reference=own)
    out = _evaluate("--model-dir", instruct_server.url, "--tasks", str(tasks), "--compare-to",
                    str(model_dirs["instruct"]), "--max-regression", "0", "--json", str(tmp_path / "scores.json"))
    assert out.returncode == 0, out.stderr
    assert "| answers | generation | 4 |" in out.stdout and "| +0.0000 |" in out.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())
    served, folder = scores["model"], scores["compared"]
    for ours, theirs in zip(served["choice"]["details"], folder["choice"]["details"], strict=True):
        assert ours["loglikelihoods"] == pytest.approx(theirs["loglikelihoods"], abs=1e-4)
        assert ours["chosen"] == theirs["chosen"]
    assert (served["choice"]["acc"], served["choice"]["acc_norm"]) == (folder["choice"]["acc"],
                                                                       folder["choice"]["acc_norm"])
    assert [d["answer"] for d in served["answers"]["details"]] == [d["answer"] for d in folder["answers"]["details"]]
    assert served["answers"]["exact_match"] == folder["answers"]["exact_match"] >= 0.25
    assert served["answers"]["rougeL"] == folder["answers"]["rougeL"]


def test_an_unreachable_endpoint_fails_with_the_fix(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gone = _evaluate("--model-dir", url, "--tasks", str(_tasks(tmp_path / "tasks")))
    assert gone.returncode == 2
    assert f"evaluate: --model-dir: cannot reach {url}/ping" in gone.stderr
    assert "Fix: start the server (tuneforge serve / docker run IMAGE serve) and pass its URL" in gone.stderr


def test_lm_eval_yaml_tasks_score_the_same_on_the_endpoint(instruct_server, model_dirs, tmp_path):
    """The YAML tasks of tests/unit/lm_eval_channel (multiple choice, generate_until) through the
    server equal lm-eval's HFLM on the folder: every metric, every log-likelihood within 1e-4."""
    tasks = Path(__file__).parents[1] / "unit" / "lm_eval_channel"
    out = _evaluate("--model-dir", instruct_server.url, "--tasks", str(tasks), "--compare-to",
                    str(model_dirs["instruct"]), "--json", str(tmp_path / "scores.json"))
    assert out.returncode == 0, out.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    served, folder = scores["model"], scores["compared"]
    assert set(served) == set(folder) == {"qa", "trivia"}
    for name in served:
        assert served[name]["metric"] == folder[name]["metric"]
        assert served[name]["metrics"] == pytest.approx(folder[name]["metrics"], abs=1e-4), name
    assert served["trivia"]["items"] == folder["trivia"]["items"] > 0


def test_the_endpoint_lm_answers_as_lm_evals_hflm_on_the_folder(instruct_server, model_dirs):
    """Request by request: the same log-likelihoods (1e-4) and is_greedy flags, the same greedy text."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from tuneforge.evaluation.endpoint import Endpoint
    from tuneforge.evaluation.endpoint_harness import EndpointLM

    served, folder = EndpointLM(Endpoint(instruct_server.url), "test"), HFLM(pretrained=str(model_dirs["instruct"]), device="cpu")
    folder.model.generation_config.max_new_tokens = None  # as harness.py runs it: max_gen_toks decides
    pairs = [("Question: What do bees make?\nAnswer:", " honey"), ("The sky is ", "blue"), ("a", " b c d")]
    asked = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    ours, theirs = served.loglikelihood(asked), folder.loglikelihood(asked)
    assert [value for value, _ in ours] == pytest.approx([value for value, _ in theirs], abs=1e-4)
    assert [greedy for _, greedy in ours] == [greedy for _, greedy in theirs]
    generate = [Instance("generate_until", {}, ("Q: What is two plus two?\nA:", {"until": ["\n"], "max_gen_toks": 12}),
                         0), Instance("generate_until", {}, ("Once upon a time", {"until": ["."], "max_gen_toks": 20}), 1)]
    texts = served.generate_until(generate)
    assert texts == folder.generate_until(generate) and all(texts), texts
