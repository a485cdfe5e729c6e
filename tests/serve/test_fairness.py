"""Long generations do not starve short requests (the transformers engine cuts a long generate
call when others wait; vLLM schedules per token): a short request behind two streams of 8 x 2500
tokens is answered in seconds, well inside the deadline, and the streams still end whole."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.serve.conftest import Server, running

LONG, DEADLINE_S = 2500, 8
PROMPT = "What color is the banana?"  # the long model's greedy answer runs past 3000 tokens


@pytest.fixture(scope="module")
def server(model_dirs, tmp_path_factory):
    with running(model_dirs["long"], tmp_path_factory.mktemp("fairness"),
                 {"TUNEFORGE_REQUEST_DEADLINE": str(DEADLINE_S)}) as started:
        yield started


class Stream(threading.Thread):
    """An OpenAI completions stream of n greedy copies; `texts` holds each copy's text."""

    def __init__(self, server: Server, n: int = 8, tokens: int = LONG):
        super().__init__(daemon=True)
        self.server, self.started, self.n, self.tokens = server, threading.Event(), n, tokens
        self.texts, self.finish = [""] * n, [None] * n

    def run(self):
        body = {"model": "m", "prompt": PROMPT, "max_tokens": self.tokens, "n": self.n, "temperature": 0, "stream": True}
        with self.server.post("/v1/completions", json=body, stream=True, timeout=600) as response:
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("data:") and line != "data: [DONE]":
                    for choice in json.loads(line[5:])["choices"]:
                        self.texts[choice["index"]] += choice["text"]
                        self.finish[choice["index"]] = choice["finish_reason"] or self.finish[choice["index"]]
                    self.started.set()
        self.started.set()


def test_a_short_request_is_not_starved_by_long_streams(server):
    streams = [Stream(server), Stream(server)]
    for stream in streams:
        stream.start()
    assert all(stream.started.wait(120) for stream in streams)
    time.sleep(1)
    began = time.monotonic()
    short = server.post(json={"inputs": "hi", "parameters": {"max_new_tokens": 8}})
    waited = time.monotonic() - began
    assert short.status_code == 200, short.text
    assert waited < DEADLINE_S / 2, waited  # before: it waited for the whole batch and got 503 at the deadline
    for stream in streams:
        stream.join(600)
    reference = Stream(server, n=1)  # alone, never cut
    reference.run()
    assert reference.finish == ["length"] and len(reference.texts[0]) > LONG
    for stream in streams:
        assert stream.finish == ["length"] * 8
        assert stream.texts == reference.texts * 8  # cut and continued: the same text
