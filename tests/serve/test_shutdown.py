"""A server with batching off, a one-slot queue and a 1 s deadline: overload, timeouts, SIGTERM.

Its model (tiny llama with a 4096-token context) makes a 1500-token answer take seconds, long
enough to queue behind it and to send SIGTERM while it runs.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
import requests

from tests.serve.conftest import Server, running

LONG = 1500
PROMPT = "What color is the banana?"


@pytest.fixture(scope="module")
def constrained(model_dirs, tmp_path_factory):
    env = {"TUNEFORGE_MAX_BATCH_SIZE": "1", "TUNEFORGE_MAX_QUEUE": "1", "TUNEFORGE_REQUEST_DEADLINE": "1"}
    with running(model_dirs["long"], tmp_path_factory.mktemp("constrained"), env) as server:
        yield server


class Streamer(threading.Thread):
    """Reads a long streamed TGI answer; `started` is set at its first token."""

    def __init__(self, server: Server, tokens: int):
        super().__init__(daemon=True)
        self.server, self.tokens = server, tokens
        self.started = threading.Event()
        self.events: list[dict] = []
        self.status = None

    def run(self):
        body = {"inputs": PROMPT, "parameters": {"max_new_tokens": self.tokens}, "stream": True}
        with self.server.post(json=body, stream=True) as response:
            self.status = response.status_code
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    self.events.append(json.loads(line[5:]))
                    self.started.set()
        self.started.set()


def test_full_queue_is_429_and_a_request_past_the_deadline_is_503(constrained):
    long = Streamer(constrained, LONG)
    long.start()
    assert long.started.wait(60)
    waited = {}

    def queued():
        started = time.monotonic()
        response = constrained.post(json={"inputs": "hi", "parameters": {"max_new_tokens": 2}})
        waited["response"], waited["seconds"] = response, time.monotonic() - started

    behind = threading.Thread(target=queued)
    behind.start()
    time.sleep(0.4)  # `behind` now holds the only queue slot
    overflow = constrained.post(json={"inputs": "hello", "parameters": {"max_new_tokens": 2}})
    assert overflow.status_code == 429
    assert overflow.json() == {"error": "the server queue is full (1 requests waiting); retry later",
                               "error_type": "overloaded"}
    assert overflow.headers["Retry-After"] == "1"
    behind.join(30)
    assert waited["response"].status_code == 503 and waited["response"].headers["Retry-After"] == "1"
    assert waited["response"].json()["error_type"] == "timeout"
    assert "(TUNEFORGE_REQUEST_DEADLINE); raise it" in waited["response"].json()["error"]
    assert 0.9 < waited["seconds"] < 5
    long.join(60)
    assert long.status == 200 and long.events[-1]["details"]["generated_tokens"] == LONG
    # the deadline does not apply to streams, and the server is healthy afterwards
    assert constrained.post(json={"inputs": "hi", "parameters": {"max_new_tokens": 2}}).status_code == 200


def test_a_client_that_leaves_a_stream_frees_the_model(constrained):
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": LONG}, "stream": True}
    response = constrained.post(json=body, stream=True)
    lines = response.iter_lines(decode_unicode=True)
    assert next(line for line in lines if line.startswith("data:"))
    response.close()  # hang up after the first token
    # batching is off: the next request runs only once the abandoned stream stopped generating,
    # and its 1 s deadline would turn into 503 if that took the ~4 s the whole answer needs
    started = time.monotonic()
    after = constrained.post(json={"inputs": "hi", "parameters": {"max_new_tokens": 2}})
    assert after.status_code == 200, after.text
    assert time.monotonic() - started < 1.5


def test_sigterm_lets_the_running_request_finish_and_exits_within_30s(constrained):
    long = Streamer(constrained, LONG)
    long.start()
    assert long.started.wait(60)
    signalled = time.monotonic()
    constrained.proc.send_signal(signal.SIGTERM)
    code = constrained.proc.wait(30)
    exited = time.monotonic() - signalled
    long.join(5)
    assert code == 0
    assert exited < 30
    assert long.status == 200
    assert len(long.events) == LONG
    assert long.events[-1]["details"] == {"finish_reason": "length", "generated_tokens": LONG, "seed": None,
                                          "input_length": 7}
    assert long.events[-1]["generated_text"] == "".join(e["token"]["text"] for e in long.events)
    assert "Handling signal: term" in constrained.log()
    with pytest.raises(requests.ConnectionError):
        requests.get(constrained.url + "/ping", timeout=2)
