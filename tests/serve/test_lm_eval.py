"""lm-evaluation-harness against the served model, offline, with its own model classes.

`local-completions` sends token-id prompts and, for multiple-choice tasks, `echo` + `logprobs`
+ `max_tokens: 1` and reads the prompt tokens' log-probabilities; its loglikelihoods must equal
a forward pass of the same model over the same ids. `local-chat-completions` runs a
generate_until task through the chat route. Tasks: tests/serve/lm_eval_tasks (YAML + jsonl).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # three harness runs, ~30 s each on a 2-core machine; `make test` runs them

TASKS = Path(__file__).parent / "lm_eval_tasks"
CHOICE, QA = "tuneforge_tiny_choice", "tuneforge_tiny_qa"


def _evaluate(lm, tasks: list[str], **options) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=TaskManager(include_path=str(TASKS)),
                                   log_samples=True, **options)


def _direct_loglikelihoods(model_dir: Path, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """sum log p(continuation | context) and whether every continuation token is the argmax."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for context, continuation in pairs:
            ids = context + continuation
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
            rows = logprobs[len(context) - 1:len(ids) - 1]
            target = torch.tensor(continuation)
            total = rows.gather(1, target[:, None]).sum().item()
            out.append((total, bool((rows.argmax(-1) == target).all())))
    return out


def _check_loglikelihoods(lm, samples: list[dict], model_dir: Path) -> int:
    pairs, served = [], []
    for sample in samples:
        for (context, continuation), (loglikelihood, greedy) in zip(sample["arguments"], sample["filtered_resps"]):
            pairs.append(lm._encode_pair(context, continuation))
            served.append((loglikelihood, greedy))
    direct = _direct_loglikelihoods(model_dir, pairs)
    for (got, got_greedy), (want, want_greedy) in zip(served, direct):
        assert got == pytest.approx(want, abs=1e-4)
        assert got_greedy == want_greedy
    return len(pairs)


def test_local_completions_with_a_local_tokenizer(causal, model_dirs):
    from lm_eval.api.registry import get_model
    from openai import OpenAI

    lm = get_model("local-completions")(base_url=causal.url + "/v1/completions", model="tiny-llama",
                                        tokenizer=str(model_dirs["instruct"]), batch_size=2, max_retries=1)
    assert lm.tokenized_requests  # prompts go as token ids
    results = _evaluate(lm, [CHOICE, QA])
    assert results["results"][CHOICE]["sample_len"] == 6
    assert 0.0 <= results["results"][CHOICE]["acc,none"] <= 1.0
    assert _check_loglikelihoods(lm, results["samples"][CHOICE], model_dirs["instruct"]) == 18
    # generate_until: the same greedy text the openai client gets for the same token ids and 6 stops
    client = OpenAI(base_url=causal.url + "/v1", api_key="unused", max_retries=0)
    for sample in results["samples"][QA]:
        context, kwargs = sample["arguments"][0]
        again = client.completions.create(model="tiny-llama", prompt=lm.tok_encode(context), temperature=0,
                                          max_tokens=kwargs["max_gen_toks"], stop=kwargs["until"])
        assert sample["resps"][0][0] == again.choices[0].text


def test_local_completions_with_string_prompts(causal, model_dirs):
    """tokenized_requests=False: the harness decodes its ids to text and counts the context's tokens
    on its side, so the server must tokenize the text exactly as the model's tokenizer does."""
    from lm_eval.api.registry import get_model
    from openai import OpenAI
    from transformers import AutoTokenizer

    lm = get_model("local-completions")(base_url=causal.url + "/v1/completions", model="tiny-llama",
                                        tokenizer=str(model_dirs["instruct"]), tokenized_requests=False,
                                        batch_size=2, max_retries=1)
    results = _evaluate(lm, [CHOICE, QA])
    assert _check_loglikelihoods(lm, results["samples"][CHOICE], model_dirs["instruct"]) == 18
    # generate_until: the same greedy text as the tokenizer's own ids of the same context
    tokenizer = AutoTokenizer.from_pretrained(model_dirs["instruct"])
    client = OpenAI(base_url=causal.url + "/v1", api_key="unused", max_retries=0)
    for sample in results["samples"][QA]:
        context, kwargs = sample["arguments"][0]
        again = client.completions.create(model="tiny-llama", prompt=tokenizer(context)["input_ids"],
                                          temperature=0, max_tokens=kwargs["max_gen_toks"], stop=kwargs["until"])
        assert sample["resps"][0][0] == again.choices[0].text


def test_local_completions_with_the_server_tokenizer(causal, model_dirs):
    """No tokenizer path: lm_eval finds /tokenizer_info and /tokenize and tokenizes through them."""
    from lm_eval.api.registry import get_model

    lm = get_model("local-completions")(base_url=causal.url + "/v1/completions", model="tiny-llama", max_retries=1)
    assert lm.tokenizer_backend == "remote"
    results = _evaluate(lm, [CHOICE])
    assert _check_loglikelihoods(lm, results["samples"][CHOICE], model_dirs["instruct"]) == 18


def test_local_chat_completions_generates(causal):
    from lm_eval.api.registry import get_model
    from openai import OpenAI

    lm = get_model("local-chat-completions")(base_url=causal.url + "/v1/chat/completions", model="tiny-llama",
                                             max_retries=1)
    results = _evaluate(lm, [QA], apply_chat_template=True)
    samples = results["samples"][QA]
    assert len(samples) == 4
    client = OpenAI(base_url=causal.url + "/v1", api_key="unused", max_retries=0)
    for sample in samples:
        chat, kwargs = sample["arguments"][0]
        messages = json.loads(chat[0] if isinstance(chat, tuple) else chat)  # a JSON string of the messages
        again = client.chat.completions.create(model="tiny-llama", messages=messages, temperature=0,
                                               max_tokens=kwargs["max_gen_toks"], stop=kwargs["until"][:4])
        assert sample["resps"][0][0] == again.choices[0].message.content
