"""The vLLM engine behind the same routes: one engine process per instance, answers equal to the
transformers engine's on the same fp32 weights, and the choice between the two engines.

The model is the tiny llama with head size 32 (vLLM's CPU attention takes no smaller); where vLLM
cannot run (not installed, a CPU without AVX2) the tests that need it skip and the fallback tests
still run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.serve.conftest import Server, write_metadata

pytestmark = pytest.mark.slow  # three vLLM starts, ~1 min each on a 2-core machine; `make test` runs them

VLLM_ENV = {"SERVING_ENGINE": "vllm", "TUNEFORGE_DTYPE": "float32", "TUNEFORGE_KV_CACHE_GB": "1"}
VLLM_START_TIMEOUT = 600
PROMPTS = ["What color is the banana?", "Name three rivers", "hello world"]


def check(model_dir: Path, **env) -> subprocess.CompletedProcess:
    """`serve --check`: validates the folder and prints the engine it would use, and why."""
    return subprocess.run([sys.executable, "-m", "tuneforge.serve.server", "--model-dir", str(model_dir), "--check"],
                          env=dict(os.environ, HF_HUB_OFFLINE="1", **env), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def hd32_model(tiny, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vllm-model") / "instruct"
    shutil.copytree(tiny("llama_hd32"), folder)
    write_metadata(folder)
    return folder


@pytest.fixture(scope="module")
def vllm_choice(hd32_model) -> str:
    done = check(hd32_model, SERVING_ENGINE="auto")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("serve: engine"))
    if not line.startswith("serve: engine vllm"):
        pytest.skip(f"vLLM cannot serve here: {line}")
    return line


@pytest.fixture(scope="module")
def engines(hd32_model, vllm_choice, tmp_path_factory):
    """The same folder on both engines, started together."""
    logs = tmp_path_factory.mktemp("vllm-logs")
    vllm = Server(hd32_model, logs / "vllm.log", env=dict(VLLM_ENV, TUNEFORGE_WORKERS="2"))
    twin = Server(hd32_model, logs / "transformers.log", env={"TUNEFORGE_DTYPE": "float32"})
    try:
        twin.wait_ready()
        vllm.wait_ready(VLLM_START_TIMEOUT)
        _wait_every_worker_ready(vllm)
        yield vllm, twin
    finally:
        for server in (vllm, twin):
            server.stop()


def test_auto_picks_vllm_and_says_why(vllm_choice):
    assert "vLLM" in vllm_choice and "LlamaForCausalLM" in vllm_choice


def test_auto_falls_back_where_vllm_cannot_serve(model_dirs, tiny):
    t5 = check(model_dirs["t5"], SERVING_ENGINE="auto")
    assert t5.returncode == 0
    assert "serve: engine transformers: SERVING_ENGINE=auto and" in t5.stderr
    assert "encoder-decoder" in t5.stderr
    missing = check(model_dirs["instruct"], SERVING_ENGINE="auto", TUNEFORGE_VLLM_PYTHON="/nonexistent/python")
    assert "engine transformers" in missing.stderr and "vLLM is not installed" in missing.stderr


def test_serving_engine_vllm_fails_clearly_where_it_cannot(model_dirs):
    done = check(model_dirs["t5"], SERVING_ENGINE="vllm")
    assert done.returncode == 2
    assert "SERVING_ENGINE=vllm, but vLLM does not serve encoder-decoder models" in done.stderr
    assert "SERVING_ENGINE=auto or transformers" in done.stderr
    bad = check(model_dirs["t5"], SERVING_ENGINE="fast")
    assert bad.returncode == 2 and "SERVING_ENGINE='fast'" in bad.stderr and "auto, vllm or transformers" in bad.stderr


def test_one_engine_process_serves_two_workers(engines):
    vllm, _ = engines
    assert "model ready after" in vllm.log() and "(engine: vllm)" in vllm.log()
    assert "serve: starting vLLM on http://127.0.0.1:" in vllm.log()
    children = _children(vllm.proc.pid)  # the engine and two gunicorn workers
    engines_running = [pid for pid in _descendants(vllm.proc.pid) if "openai.api_server" in _cmdline(pid)]
    assert len(engines_running) == 1 and engines_running[0] in children and len(children) == 3


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_answers_equal_the_transformers_engine(engines, prompt):
    vllm, twin = engines
    got, want = vllm.generate(prompt, max_new_tokens=24), twin.generate(prompt, max_new_tokens=24)
    assert [t["id"] for t in got["details"]["tokens"]] == [t["id"] for t in want["details"]["tokens"]]
    assert got["generated_text"] == want["generated_text"]
    assert got["details"]["finish_reason"] == want["details"]["finish_reason"]
    for a, b in zip(got["details"]["tokens"], want["details"]["tokens"]):
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-3)


def test_stop_sequences_cut_as_on_the_transformers_engine(engines):
    vllm, twin = engines
    full = twin.generate(PROMPTS[0], max_new_tokens=24)["generated_text"]
    stop = full[len(full) // 2:len(full) // 2 + 2]
    got = vllm.generate(PROMPTS[0], max_new_tokens=24, stop=[stop])
    want = twin.generate(PROMPTS[0], max_new_tokens=24, stop=[stop])
    assert got["generated_text"] == want["generated_text"] == full[:full.index(stop)]
    assert got["details"]["finish_reason"] == "stop_sequence"


def test_no_repeat_ngram_size_bans_as_on_the_transformers_engine(engines):
    """vLLM runs tuneforge's logits processor (vllm_plugin/): the same ids as transformers' own."""
    vllm, twin = engines
    free = twin.generate(PROMPTS[0], max_new_tokens=24)
    got = vllm.generate(PROMPTS[0], max_new_tokens=24, no_repeat_ngram_size=2)
    want = twin.generate(PROMPTS[0], max_new_tokens=24, no_repeat_ngram_size=2)
    ids = [t["id"] for t in got["details"]["tokens"]]
    assert ids == [t["id"] for t in want["details"]["tokens"]]
    assert ids != [t["id"] for t in free["details"]["tokens"]]  # the tiny model repeats itself unbanned
    pairs = list(zip(ids, ids[1:]))
    assert len(pairs) == len(set(pairs))


def test_streams_the_same_text_token_by_token(engines):
    vllm, _ = engines
    whole = vllm.generate(PROMPTS[1], max_new_tokens=16)
    with vllm.post(json={"inputs": PROMPTS[1], "parameters": {"max_new_tokens": 16}, "stream": True},
                   stream=True) as response:
        assert response.status_code == 200
        events = [json.loads(line[5:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data:")]
    assert len(events) == 16
    assert "".join(e["token"]["text"] for e in events) == whole["generated_text"]
    assert events[-1]["generated_text"] == whole["generated_text"]


def test_seeded_sampling_repeats_and_n_gives_several(engines):
    vllm, _ = engines
    body = {"inputs": PROMPTS[2], "parameters": {"max_new_tokens": 12, "do_sample": True, "seed": 7,
                                                 "temperature": 1.5}}
    first, again = vllm.post(json=body).json(), vllm.post(json=body).json()
    assert first == again
    other = vllm.post(json={**body, "parameters": {**body["parameters"], "seed": 8}}).json()
    assert other != first
    from openai import OpenAI

    client = OpenAI(base_url=vllm.url + "/v1", api_key="unused", max_retries=0)
    answer = client.completions.create(model="m", prompt="hello", n=3, max_tokens=6, temperature=1.0, seed=3)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert len({c.text for c in answer.choices}) > 1


def test_echoed_prompt_scores_equal_a_forward_pass(engines, hd32_model):
    """What lm-evaluation-harness does for multiple choice: token ids, echo, logprobs, max_tokens 0/1."""
    import torch
    from transformers import AutoModelForCausalLM

    vllm, twin = engines
    ids = [1, 50, 60, 70, 80, 90, 100, 110]
    for max_tokens in (0, 1):
        body = {"prompt": ids, "max_tokens": max_tokens, "echo": True, "logprobs": 2, "temperature": 0}
        answer, same = vllm.post("/v1/completions", json=body).json(), twin.post("/v1/completions", json=body).json()
        served = answer["choices"][0]["logprobs"]["token_logprobs"][:len(ids)]
        assert served[0] is None
        model = AutoModelForCausalLM.from_pretrained(hd32_model, dtype=torch.float32).eval()
        with torch.inference_mode():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], dim=-1)
        direct = [logprobs[i - 1, ids[i]].item() for i in range(1, len(ids))]
        assert served[1:] == pytest.approx(direct, abs=1e-3)
        top, want = answer["choices"][0]["logprobs"]["top_logprobs"], same["choices"][0]["logprobs"]["top_logprobs"]
        assert [sorted(t) for t in top[1:]] == [sorted(t) for t in want[1:]]
        assert max(top[1].values()) == pytest.approx(logprobs[0].max().item(), abs=1e-3)
        assert answer["choices"][0]["text"] == same["choices"][0]["text"]


def test_json_schema_answers_parse(engines):
    from openai import OpenAI

    vllm, _ = engines
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                               "count": {"type": "integer"}}, "required": ["city", "count"],
              "additionalProperties": False}
    client = OpenAI(base_url=vllm.url + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "a city"}], max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
    value = json.loads(answer.choices[0].message.content)
    assert set(value) == {"city", "count"} and isinstance(value["count"], int)


def test_ping_stays_fast_while_the_engine_is_busy(engines):
    import threading

    vllm, _ = engines
    body = {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 200, "do_sample": True, "seed": 1}}
    workers = [threading.Thread(target=vllm.post, kwargs={"json": body}) for _ in range(8)]
    for worker in workers:
        worker.start()
    slowest = 0.0
    while any(w.is_alive() for w in workers):
        started = time.monotonic()
        assert requests.get(vllm.url + "/ping", timeout=5).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    for worker in workers:
        worker.join()
    assert slowest < 1.0


def test_metrics_count_the_engines_tokens(engines):
    vllm, _ = engines
    vllm.generate(PROMPTS[0], max_new_tokens=5)
    text = requests.get(vllm.url + "/metrics", timeout=5).text
    generated = [line for line in text.splitlines() if line.startswith("tuneforge_request_generated_tokens_total")]
    assert generated and float(generated[0].split()[-1]) >= 5
    # the engine's own series: waiting and running requests, KV cache use, tokens
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:generation_tokens_total"):
        assert any(line.startswith(name) for line in text.splitlines()), name
    engine_tokens = [line for line in text.splitlines() if line.startswith("vllm:generation_tokens_total")]
    assert float(engine_tokens[0].split()[-1]) >= 5


def test_sigterm_finishes_the_running_stream_then_stops_gunicorn_and_the_engine(hd32_model, vllm_choice, tmp_path):
    from tests.serve.test_shutdown import Streamer

    server = Server(hd32_model, tmp_path / "serve.log", env=VLLM_ENV).wait_ready(VLLM_START_TIMEOUT)
    tree = _descendants(server.proc.pid)
    assert any("openai.api_server" in _cmdline(pid) for pid in tree)
    streamer = Streamer(server, 400)
    streamer.start()
    assert streamer.started.wait(60)
    assert server.stop(timeout=60) == 0  # SIGTERM, then wait
    streamer.join(5)
    assert streamer.status == 200 and len(streamer.events) == 400
    assert streamer.events[-1]["details"]["finish_reason"] == "length"
    time.sleep(1)
    assert [pid for pid in tree if _alive(pid)] == []


def test_the_server_stops_when_the_engine_dies(hd32_model, vllm_choice, tmp_path):
    server = Server(hd32_model, tmp_path / "serve.log", env=VLLM_ENV).wait_ready(VLLM_START_TIMEOUT)
    engine = next(pid for pid in _descendants(server.proc.pid) if "api_server" in _cmdline(pid))
    os.killpg(engine, signal.SIGKILL)
    assert server.proc.wait(60) == 1
    assert "the vLLM engine exited" in server.log()


def _wait_every_worker_ready(server: Server, timeout: float = 120) -> None:
    """/ping answers from whichever worker takes it; the metric is 1 only when every worker is ready."""
    end = time.monotonic() + timeout
    while "tuneforge_model_ready 1.0" not in requests.get(server.url + "/metrics", timeout=5).text:
        assert time.monotonic() < end, "a worker did not become ready"
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        found = _children(todo.pop())
        out += found
        todo += found
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
