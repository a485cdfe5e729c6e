"""GET /metrics in Prometheus text, and one access-log line per request with its timings."""

from __future__ import annotations

import re
import time

import pytest
import requests


def scrape(server) -> str:
    response = requests.get(server.url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


def value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_count_requests_statuses_and_tokens(causal):
    before = scrape(causal)
    ok = causal.generate("What color is the plum?", max_new_tokens=5)
    bad = causal.post(json={"inputs": "x", "parameters": {"top_p": 7}})
    assert bad.status_code == 422
    after = scrape(causal)
    ok_series = 'tuneforge_request_count_total{route="/invocations",status="200"}'
    bad_series = 'tuneforge_request_count_total{route="/invocations",status="422"}'
    assert value(after, ok_series) - value(before, ok_series) == 1
    assert value(after, bad_series) - value(before, bad_series) == 1
    generated = "tuneforge_request_generated_tokens_total"
    assert value(after, generated) - value(before, generated) == ok["details"]["generated_tokens"]
    assert value(after, "tuneforge_request_input_tokens_total") > value(before, "tuneforge_request_input_tokens_total")
    assert value(after, "tuneforge_model_ready") == 1
    assert value(after, "tuneforge_queue_size") == 0
    assert "# TYPE tuneforge_request_duration_seconds histogram" in after
    assert re.search(r'tuneforge_request_duration_seconds_bucket\{le="\+Inf",route="/invocations"\} \d+', after)


def test_access_log_has_one_line_per_request_with_timings(causal):
    marker = "/ping?probe=access-log-test"
    requests.get(causal.url + marker, timeout=5)
    response = causal.post(json={"inputs": "Name the color of the coal.", "parameters": {"max_new_tokens": 3}})
    prompt_tokens = response.headers["x-prompt-tokens"]
    time.sleep(0.5)  # the log line is written after the response is sent
    log = causal.log()
    assert log.count(marker) == 1
    lines = [line for line in log.splitlines() if '"POST /invocations HTTP/1.1" 200' in line
             and f"prompt_tokens={prompt_tokens} generated_tokens=3" in line]
    assert lines, log[-2000:]
    assert re.search(r"200 \d+ \d+ms queue=\d+ms inference=\d+ms prompt_tokens=\d+ generated_tokens=3$", lines[-1])


@pytest.mark.slow  # starts its own two-worker server
def test_a_scrape_adds_up_every_worker(tmp_path, model_dirs):
    """Two gunicorn workers: whichever answers the scrape, it counts the requests both answered."""
    from .conftest import Server

    server = Server(model_dirs["instruct"], tmp_path / "two-workers.log", args=("--workers", "2"))
    try:
        server.wait_ready()
        time.sleep(2)  # the second worker may still be loading; /ping reached the first
        server.wait_ready()
        with requests.Session() as one, requests.Session() as other:  # two connections: both workers answer
            for session in (one, other) * 4:
                response = session.post(server.url + "/invocations", timeout=60,
                                        json={"inputs": "hi", "parameters": {"max_new_tokens": 2}})
                assert response.status_code == 200
        series = 'tuneforge_request_count_total{route="/invocations",status="200"}'
        scrapes = [scrape(server) for _ in range(6)]
        assert [value(text, series) for text in scrapes] == [8] * 6
        workers = re.findall(r'tuneforge_worker_info\{pid="(\d+)"\} 1', scrapes[-1])
        assert len(set(workers)) == 2
        assert all(value(text, "tuneforge_model_ready") == 1 for text in scrapes)
    finally:
        server.stop()
