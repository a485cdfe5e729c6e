"""training_method=dpo, orpo, simpo and kto end to end on the tiny Llama: real jobs on a temporary /opt/ml tree, a real
`tuneforge serve` on what they write, a real SIGTERM to a running job."""

import json
import os
import re
import signal

import pytest

from tests.serve.conftest import Server

# "It is blue." and "It is red." have the same number of tokens and the untrained tiny model finds
# "red" likelier after each of these prompts: preference accuracy 0.0 before training
PAIRS = [{"prompt": f"What is fruit number {i}?", "chosen": "It is blue.", "rejected": "It is red."} for i in range(16)]
DPO = {"training_method": "dpo", "learning_rate": "0.02", "max_steps": "12", "per_device_train_batch_size": "8",
       "logging_steps": "1", "checkpoint_steps": "4", "rouge_samples": "2", "knowledge_check": "false"}


# KTO's unpaired rows: each pair's answers, the chosen one desirable
UNPAIRED = [{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"} for r in PAIRS for k in ("chosen", "rejected")]


def _rows(method: str) -> list:
    return UNPAIRED if method == "kto" else PAIRS


def _add_pairs(job, rows=PAIRS, validation=True):
    for channel in ("train", "validation") if validation else ("train",):
        (job.channel(channel) / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _last_logged_loss(job) -> float:
    history = json.loads((job.base / "output" / "data" / "log_history.json").read_text())
    return [entry["loss"] for entry in history if "loss" in entry][-1]


REFERENCE = {"dpo": "the base model with the LoRA adapter turned off (no copy)", "orpo": "none: orpo is reference-free",
             "simpo": "none: simpo is reference-free", "kto": "the base model with the LoRA adapter turned off (no copy)"}


@pytest.mark.parametrize("method", ["dpo", "orpo", "simpo", "kto"])
def test_lora_preference_tuning_learns_the_preference_saves_and_is_served(job, tiny, tmp_path, capfd, method):
    from tuneforge.contract import METRIC_DEFINITIONS
    from tuneforge.model_folder import is_complete

    job.add_model(tiny("llama"))
    _add_pairs(job, _rows(method))
    job.hyperparameters({**DPO, "training_method": method})
    assert job.run_in_process() == 0
    metrics = job.metrics()
    assert metrics["preference"]["reference"] == REFERENCE[method]
    assert metrics["final_reward_margin"] > 0
    log = capfd.readouterr().out
    names = ["train:reward_margin", "train:chosen_logps", "train:rejected_logps", "validation:reward_margin",
             "final:reward_margin", "final:chosen_logps", "final:rejected_logps"]
    if method != "kto":  # KTO's rows are unpaired: no pair to be accurate on
        names += ["train:reward_accuracy", "validation:reward_accuracy", "final:reward_accuracy"]
        assert metrics["preference_accuracy"]["before"] == {"accuracy": 0.0, "pairs": 16}
        assert metrics["preference_accuracy"]["after"] == {"accuracy": 1.0, "pairs": 16}
        assert metrics["final_reward_accuracy"] == 1.0
    for name in names:
        regex = next(d["Regex"] for d in METRIC_DEFINITIONS if d["Name"] == name)
        assert re.search(regex, log), name
    assert "[metric] eval_perplexity=" not in log and "perplexity" not in log.split("final evaluation")[-1].split("\n")[0]
    if method == "dpo":
        accuracies = [float(v) for v in re.findall(r"\[metric\] train_reward_accuracy=([0-9.]+)", log)]
        assert accuracies[0] == 0.0 and accuracies[-1] == 1.0  # step 1: policy == reference; then it learns
    assert is_complete(job.model_dir)
    saved = json.loads((job.model_dir / "tuneforge.json").read_text())
    assert saved["prompt"]["kind"] == "instruction" and saved["hyperparameters"]["training_method"] == method
    server = Server(job.model_dir, tmp_path / "serve.log").wait_ready()
    try:
        answer = server.generate("What is fruit number 3?", max_new_tokens=4)["generated_text"]
    finally:
        assert server.stop() == 0
    if method in ("dpo", "simpo"):  # after 12 steps the ORPO and KTO tiny models' greedy answers are still blank
        assert "blue" in answer and "red" not in answer, answer
    assert answer == _greedy(job.model_dir, saved["prompt"], "What is fruit number 3?", 4)  # the saved prompt format


def _greedy(model_dir, prompt: dict, text: str, tokens: int) -> str:
    """The saved model's greedy answer, the prompt rendered with the saved format as the server does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.data.prompt import PromptFormat, encode_prompt

    tokenizer, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir)
    ids = encode_prompt(tokenizer, PromptFormat.from_dict(prompt).render_text(text), seq2seq=False)
    out = model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


@pytest.mark.parametrize("method", ["dpo", "orpo", "simpo", "kto"])
def test_resumes_after_sigterm_with_the_final_loss_of_an_uninterrupted_run(job, tiny, tmp_path_factory, method):
    from tests.conftest import Job
    from tests.distributed.conftest import finish, job_env, start, wait_for
    from tuneforge.job.checkpoints import latest_checkpoint

    quick = {**DPO, "training_method": method, "max_steps": "24", "checkpoint_steps": "2", "rouge_samples": "0",
             "validation_split_ratio": "0", "evaluation_strategy": "no", "learning_rate": "0.005"}
    job.add_model(tiny("llama"))
    _add_pairs(job, _rows(method), validation=False)
    job.hyperparameters(quick)
    assert job.run_in_process() == 0
    uninterrupted = _last_logged_loss(job)

    stopped = Job(tmp_path_factory.mktemp("stopped") / "opt" / "ml")
    stopped.add_model(tiny("llama"))
    _add_pairs(stopped, _rows(method), validation=False)
    stopped.hyperparameters(quick)
    process = start(stopped, job_env(nproc=1), new_session=True)
    assert wait_for(lambda: latest_checkpoint(stopped.base / "checkpoints"), timeout=240, interval=0.05)
    os.killpg(process.pid, signal.SIGTERM)
    code, log = finish(process, stopped, timeout=120)
    assert code == 143, log[-3000:]
    step = int(latest_checkpoint(stopped.base / "checkpoints").name.split("-")[1])
    assert step < 24 and stopped.failure_first_line().startswith(f"stopped by SIGTERM at step {step}")
    stopped.failure.unlink()
    assert stopped.run_in_process() == 0
    assert stopped.metrics()["resumed_from"].endswith(f"checkpoint-{step}")
    resumed = _last_logged_loss(stopped)
    assert abs(resumed - uninterrupted) <= 0.02 * uninterrupted, (resumed, uninterrupted)


def test_an_sft_model_folder_is_the_model_channel_of_a_dpo_job(job, tiny, tmp_path_factory):
    from tests.conftest import Job

    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    job.hyperparameters({"instruction_tuned": "True", "max_steps": "2", "rouge_samples": "0", "knowledge_check": "false"})
    assert job.run_in_process() == 0
    sft_prompt = json.loads((job.model_dir / "tuneforge.json").read_text())["prompt"]
    assert sft_prompt["prompt_template"] != "{prompt}"  # the sample data's own template, not the pairs' default

    dpo = Job(tmp_path_factory.mktemp("dpo") / "opt" / "ml")
    dpo.add_model(job.model_dir)
    _add_pairs(dpo, PAIRS[:8])
    dpo.hyperparameters({**DPO, "max_steps": "2"})
    assert dpo.run_in_process() == 0
    assert dpo.metrics()["data"]["prompt"] == sft_prompt
    assert json.loads((dpo.model_dir / "tuneforge.json").read_text())["prompt"] == sft_prompt


def test_an_adapter_only_sft_folder_is_the_model_channel_of_a_dpo_job(job, tiny, tmp_path_factory):
    """merge_weights=False: the DPO job finds the adapter's base (here a `base_model` channel: the
    path tuneforge.json recorded is gone), starts from base + adapter merged exactly, and keeps the
    SFT job's prompt format; a missing base is a clear error."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tests.conftest import Job
    from tuneforge.contract import Paths
    from tuneforge.modeling import resolve_base_model

    base = job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=16, n_val=4)
    job.hyperparameters({"instruction_tuned": "True", "max_steps": "2", "rouge_samples": "0", "knowledge_check": "false",
                         "merge_weights": "False", "learning_rate": "0.01"})
    assert job.run_in_process() == 0
    assert not (job.model_dir / "config.json").exists()  # the adapter alone
    sft_prompt = json.loads((job.model_dir / "tuneforge.json").read_text())["prompt"]

    dpo = Job(tmp_path_factory.mktemp("dpo-adapter") / "opt" / "ml")
    dpo.add_model(job.model_dir)
    _add_pairs(dpo, PAIRS[:8])
    dpo.hyperparameters({**DPO, "max_steps": "2"})
    shutil.copytree(base, tmp_path_factory.mktemp("kept") / "base")
    kept = next(tmp_path_factory.getbasetemp().glob("kept*/base"))
    shutil.rmtree(base)  # the path the adapter's tuneforge.json names is gone
    assert dpo.run_in_process() == 1
    assert "holds only a LoRA adapter and its base model was not found" in dpo.failure_first_line()
    assert "base_model" in dpo.failure.read_text()

    dpo.failure.unlink()
    shutil.copytree(kept, dpo.channel("base_model"), dirs_exist_ok=True)
    merged_dir = resolve_base_model(Paths(dpo.base), None)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(kept), job.model_dir).merge_and_unload()
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, expected(ids).logits, atol=1e-5)
    assert dpo.run_in_process() == 0, dpo.failure.read_text() if dpo.failure.exists() else ""
    assert dpo.metrics()["data"]["prompt"] == sft_prompt
    saved = json.loads((dpo.model_dir / "tuneforge.json").read_text())
    assert saved["prompt"] == sft_prompt and saved["adapter_only"] is False
    assert (dpo.model_dir / "config.json").exists()  # the DPO job merges its own adapter (merge_weights default)


@pytest.mark.parametrize("hyperparameters, rows, first_line", [
    (DPO, [PAIRS[0], PAIRS[1], {**PAIRS[2], "rejected": PAIRS[2]["chosen"]}],
     "pairs.jsonl:3: 'chosen' and 'rejected' are the same answer"),
    ({"rouge_samples": "0"}, PAIRS[:4], "training_method=sft cannot train on"),
    (DPO, [{"prompt": "p", "completion": "c"}], "training_method=dpo needs preference pairs"),
])
def test_bad_preference_input_fails_the_job_with_the_fix(job, tiny, hyperparameters, rows, first_line):
    job.add_model(tiny("llama"))
    _add_pairs(job, rows, validation=False)
    job.hyperparameters(hyperparameters)
    assert job.run_in_process() == 1
    assert first_line in job.failure_first_line(), job.failure_first_line()
    assert list(job.model_dir.iterdir()) == [] if job.model_dir.exists() else True


CHAT_PAIRS = [{"chosen": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["chosen"]}],
               "rejected": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["rejected"]}]}
              for p in PAIRS]


@pytest.mark.parametrize("precompute, reference", [
    ("false", "a frozen copy of the base model"),
    ("true", "log-probabilities of the base computed once before training (no copy)"),
])
def test_full_fine_tuning_dpo_on_conversations(job, tiny, precompute, reference):
    job.add_model(tiny("llama"))
    _add_pairs(job, CHAT_PAIRS)
    job.hyperparameters({**DPO, "peft_type": "none", "learning_rate": "0.001", "precompute_ref_log_probs": precompute})
    assert job.run_in_process() == 0
    metrics = job.metrics()
    assert metrics["preference"]["reference"] == reference
    assert metrics["data"]["format"] == "preference" and metrics["data"]["prompt_format"] == "chat"
    accuracy = metrics["preference_accuracy"]
    assert (accuracy["before"]["accuracy"], accuracy["after"]["accuracy"]) == (0.0, 1.0), accuracy
    assert json.loads((job.model_dir / "tuneforge.json").read_text())["prompt"]["kind"] == "chat"
    # the greedy answers are compared with the chosen answers as written, not with the end marker
    samples = [json.loads(line) for line in (job.base / "output" / "data" / "samples.jsonl").read_text().splitlines()]
    assert samples and {s["reference"] for s in samples} <= {p["chosen"] for p in PAIRS}, samples[0]


def test_dpo_over_two_processes(job, tiny):
    """Two ranks (gloo on CPU): each reads the pairs itself, TRL tokenizes them on each rank."""
    from tests.distributed.conftest import run_job

    job.add_model(tiny("llama"))
    _add_pairs(job)
    job.hyperparameters({**DPO, "max_steps": "6", "per_device_train_batch_size": "4", "checkpoint_steps": "3"})
    code, log = run_job(job, timeout=400, nproc=2)
    assert code == 0, log[-3000:]
    metrics = job.metrics()
    assert metrics["distributed_type"] == "MULTI_CPU" and metrics["steps"] == 6
    assert metrics["preference_accuracy"]["after"] == {"accuracy": 1.0, "pairs": 16}
