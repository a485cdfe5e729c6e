"""Many clients at once: every answer is its own prompt's answer, and requests share batches."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.serve.conftest import TEST_ENGINE

CLIENTS, REQUESTS_EACH = 16, 10
ITEMS = ["banana", "lemon", "cherry", "tomato", "lime", "cucumber", "spinach", "blueberry",
         "sapphire", "plum", "eggplant", "carrot", "pumpkin", "coal", "raven", "snow"]


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def test_sixteen_clients_get_their_own_answers_in_shared_batches(causal):
    prompts = [f"What color is the {item}?" for item in ITEMS[:CLIENTS]]
    lengths = [6 + (i % 3) * 5 for i in range(CLIENTS)]  # mixed max_new_tokens in one batch
    alone = [causal.generate(p, max_new_tokens=n)["generated_text"] for p, n in zip(prompts, lengths)]
    # distinct prompts, mostly distinct answers (the head-size-32 model of the vLLM pass varies less)
    assert len(set(alone)) > (3 if TEST_ENGINE == "vllm" else CLIENTS // 2)
    before = requests.get(causal.url + "/metrics", timeout=5).text

    def client(i: int) -> list[tuple[int, str]]:
        out = []
        with requests.Session() as session:
            for _ in range(REQUESTS_EACH):
                r = session.post(causal.url + "/invocations", timeout=120,
                                 json={"inputs": prompts[i], "parameters": {"max_new_tokens": lengths[i]}})
                out.append((r.status_code, r.json()[0]["generated_text"] if r.ok else r.text))
        return out

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(client, range(CLIENTS)))
    for i, answers in enumerate(results):
        assert [status for status, _ in answers] == [200] * REQUESTS_EACH
        assert [text for _, text in answers] == [alone[i]] * REQUESTS_EACH, f"client {i}"

    after = requests.get(causal.url + "/metrics", timeout=5).text
    if "vllm:num_requests_running" in after:
        return  # vLLM batches inside its engine (tests/serve/test_vllm.py reads its metrics)
    batches = metric(after, "tuneforge_batch_size_count") - metric(before, "tuneforge_batch_size_count")
    sequences = metric(after, "tuneforge_batch_size_sum") - metric(before, "tuneforge_batch_size_sum")
    assert sequences == CLIENTS * REQUESTS_EACH
    assert batches < sequences / 2, (batches, sequences)  # batching really happened
