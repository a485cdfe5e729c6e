"""FSDP jobs score the evaluation tasks with every rank in lockstep (llm/lockstep.py). FSDP jobs
run only on GPUs (docs/scale.md), but FSDP2 itself shards on CPU over gloo: two processes shard
the tiny model as accelerate does and score generation, multiple-choice and lm-eval tasks through
the same code the job runs; the scores equal the whole model's."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, job_env

pytestmark = pytest.mark.slow

CHANNEL = Path(__file__).parents[1] / "unit" / "lm_eval_channel"  # trivia.yaml, qa.yaml, data/
WORKER = Path(__file__).with_name("fsdp_scoring_worker.py")


def test_fsdp_sharded_model_scores_the_tasks_in_lockstep(tmp_path, tiny):
    from tuneforge.evaluation.cli import evaluate

    tasks = tmp_path / "tasks"
    shutil.copytree(CHANNEL, tasks)
    (tasks / "choice.jsonl").write_text("".join(json.dumps(item) + "\n" for item in [
        {"question": "What color is a ripe banana?", "choices": ["yellow", "blue", "purple"], "answer": 0},
        {"question": "How many legs does a spider have?", "choices": ["six", "eight", "ten"], "answer": 1}]))
    (tasks / "answers.jsonl").write_text("".join(json.dumps({"prompt": p, "reference": "yes"}) + "\n"
                                                 for p in ("Say yes.", "Is the sky up?", "Answer with one word: yes")))
    out = tmp_path / "scores.json"
    env = job_env(nproc=2)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", env["TUNEFORGE_MASTER_PORT"],
               str(WORKER), str(tiny("llama")), str(tasks), str(out)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sharded = json.loads(out.read_text())
    whole = evaluate(tiny("llama"), tasks, max_new_tokens=16)
    assert set(sharded) == set(whole) == {"answers", "choice", "qa", "trivia"}
    for name, result in sharded.items():
        assert result["score"] == pytest.approx(whole[name]["score"], abs=1e-6), name
        assert result["items"] == whole[name]["items"], name
    assert sharded["choice"]["acc_norm"] == pytest.approx(whole["choice"]["acc_norm"], abs=1e-6)
