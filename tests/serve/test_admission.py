"""Admission by capacity: load the server can finish in time is answered, and a request that
would wait past its deadline is refused at once (429, Retry-After), not answered 503 later."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.serve.conftest import running
from tests.serve.test_fairness import PROMPT, Stream

DEADLINE_S = 4


@pytest.fixture(scope="module")
def one_at_a_time(model_dirs, tmp_path_factory):
    """Batching and cutting off: a long stream holds the engine, and requests queue behind it."""
    env = {"TUNEFORGE_MAX_BATCH_SIZE": "1", "TUNEFORGE_BATCH_SLICE_S": "0",
           "TUNEFORGE_REQUEST_DEADLINE": str(DEADLINE_S)}
    with running(model_dirs["long"], tmp_path_factory.mktemp("admission"), env) as server:
        yield server


def test_a_request_that_would_wait_past_the_deadline_is_refused_at_once(one_at_a_time):
    server = one_at_a_time
    long = Stream(server, n=1, tokens=4000)  # many seconds alone on the engine
    long.start()
    assert long.started.wait(120)
    queued = {}
    behind = threading.Thread(target=lambda: queued.update(response=server.post(
        json={"inputs": "hi", "parameters": {"max_new_tokens": 2}})))
    behind.start()
    time.sleep(DEADLINE_S * 0.5 + 0.5)  # `behind` has now waited past half the deadline
    began = time.monotonic()
    refused = server.post(json={"inputs": "hello", "parameters": {"max_new_tokens": 2}})
    assert time.monotonic() - began < 1
    assert refused.status_code == 429 and refused.json()["error_type"] == "overloaded"
    assert "before generation starts, past half the 4 s deadline (TUNEFORGE_REQUEST_DEADLINE)" in refused.json()["error"]
    assert int(refused.headers["Retry-After"]) >= DEADLINE_S * 0.5
    behind.join(30)
    assert queued["response"].status_code == 503  # admitted before the wait grew: the deadline passed
    stream = Stream(server, n=1, tokens=4)  # streams have no deadline: still admitted
    stream.run()
    long.join(300)
    assert long.finish == ["length"] and stream.finish == ["length"]
    after = server.post(json={"inputs": "hello", "parameters": {"max_new_tokens": 2}})
    assert after.status_code == 200, after.text


@pytest.fixture(scope="module")
def batching(model_dirs, tmp_path_factory):
    env = {"TUNEFORGE_MAX_BATCH_SIZE": "32", "TUNEFORGE_REQUEST_DEADLINE": "30"}
    with running(model_dirs["long"], tmp_path_factory.mktemp("batching"), env) as server:
        yield server


def test_sixteen_clients_of_long_answers_are_all_answered(batching):
    """The documented batching settings under 16 concurrent clients of 1000-token answers (64
    requests): every one answered, none turned into a 503 or a 429."""

    def client(_):
        response = batching.post(json={"inputs": PROMPT, "parameters": {"max_new_tokens": 1000}}, timeout=300)
        return response.status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = Counter(pool.map(client, range(64)))
    assert statuses == {200: 64}
