#!/usr/bin/env python
"""Serving speed: tuneforge on each engine against vLLM's own server, same model, same run.

Starts one server at a time on a loopback port (they never share the CPU): `tuneforge serve` with
SERVING_ENGINE=vllm, `tuneforge serve` with SERVING_ENGINE=transformers, and vLLM's own OpenAI
server (`python -m vllm.entrypoints.openai.api_server` from vLLM's environment), each with its
defaults. Every server gets the same chat requests (prompts of 30-300 tokens, greedy, a fixed
number of new tokens), first at each concurrency of --concurrency without streaming (tokens/s,
errors), then streaming at the first concurrency (time to first token). A nonce per server and
round keeps prompts from repeating between runs, so no prefix cache helps one server over another.
/ping (or vLLM's /health) is polled during the load. The last table gives tuneforge/vLLM ratios.

    .venv/bin/python scripts/bench_serve.py --model-dir .cache/smollm2 --requests 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

WORDS = ("river mountain ledger parcel invoice router kernel harvest lantern meadow copper violet "
         "engine packet signal orchard canyon glacier pepper saddle window garden").split()
START_TIMEOUT_S = 900


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(kind: str, model_dir: Path, port: int) -> tuple[list[str], dict]:
    if kind == "vllm-own":
        from tuneforge.serve.loader import check_model_dir
        from tuneforge.serve.settings import ServeSettings
        from tuneforge.serve.vllm_launch import EngineChoice, engine_environment, vllm_python

        settings = ServeSettings.from_env({"TUNEFORGE_MODEL_DIR": str(model_dir)})
        python = vllm_python(settings)  # where `serve` finds vLLM
        if python is None:
            raise SystemExit("vLLM's environment is not installed (make setup puts it in .venv/vllm)")
        # The same preloads and KV cache size tuneforge gives its engine: only the front end differs.
        env = engine_environment(settings, check_model_dir(settings), EngineChoice("vllm", "", python))
        return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                "--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port)], env
    engine = kind.removeprefix("tuneforge-")
    env = dict(os.environ, SERVING_ENGINE=engine, TUNEFORGE_ACCESS_LOG="off", TOKENIZERS_PARALLELISM="false")
    return [sys.executable, "-m", "tuneforge.serve.server", "--model-dir", str(model_dir), "--host", "127.0.0.1",
            "--port", str(port)], env


def start(kind: str, model_dir: Path, log_path: Path):
    port = free_port()
    command, env = server_command(kind, model_dir, port)
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    health = "/health" if kind == "vllm-own" else "/ping"
    while time.monotonic() < started + START_TIMEOUT_S:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} exited with {proc.returncode}; see {log_path}")
        try:
            if requests.get(url + health, timeout=2).status_code == 200:
                return proc, url, health, time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"{kind} not ready after {START_TIMEOUT_S} s; see {log_path}")


def prompts(count: int, nonce: str, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 220)))
        out.append(f"[{nonce}-{i}] Summarize these notes in one sentence: {words}")
    return out


def chat(session, url: str, prompt: str, new_tokens: int, stream: bool) -> tuple[int, int, float, float]:
    """(status, completion tokens, first-token seconds, total seconds) of one chat request."""
    body = {"model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": new_tokens,
            "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    first, tokens = None, 0
    with session.post(url + "/v1/chat/completions", json=body, timeout=900, stream=stream) as response:
        if response.status_code != 200:
            return response.status_code, 0, 0.0, time.perf_counter() - started
        if not stream:
            tokens = response.json()["usage"]["completion_tokens"]
            elapsed = time.perf_counter() - started
            return 200, tokens, elapsed, elapsed
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            if first is None and any((c.get("delta") or {}).get("content") for c in event.get("choices", [])):
                first = time.perf_counter() - started
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return 200, tokens, first or 0.0, time.perf_counter() - started


def load(url: str, health: str, texts: list[str], concurrency: int, new_tokens: int, stream: bool) -> dict:
    pings: list[float] = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            started = time.perf_counter()
            try:
                requests.get(url + health, timeout=30)
            except requests.RequestException:
                pass
            pings.append(time.perf_counter() - started)
            time.sleep(0.25)

    local = threading.local()

    def one(prompt):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return chat(local.session, url, prompt, new_tokens, stream)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        rows = list(pool.map(one, texts))
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    ok = [row for row in rows if row[0] == 200]
    tokens = sum(row[1] for row in ok)
    return {"concurrency": concurrency, "stream": stream, "requests": len(rows), "errors": len(rows) - len(ok),
            "seconds": round(wall, 2), "tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
            "first_token_p50_s": round(statistics.median(r[2] for r in ok), 2) if ok else None,
            "latency_p50_s": round(statistics.median(r[3] for r in ok), 2) if ok else None,
            "ping_max_ms": round(max(pings, default=0) * 1000)}


def bench(kind: str, args, logs: Path) -> dict:
    proc, url, health, start_s = start(kind, args.model_dir, logs / f"{kind}.log")
    try:
        warm = ThreadPoolExecutor(2)
        list(warm.map(lambda p: chat(requests.Session(), url, p, 8, False), prompts(4, f"{kind}-warm")))
        runs = [load(url, health, prompts(args.requests, f"{kind}-c{c}", seed=c), c, args.max_new_tokens, False)
                for c in args.concurrency]
        runs.append(load(url, health, prompts(args.requests, f"{kind}-s", seed=99), args.concurrency[0],
                         args.max_new_tokens, True))
        return {"start_s": round(start_s, 1), "runs": runs}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="a safetensors model folder")
    parser.add_argument("--servers", default="tuneforge-vllm,vllm-own,tuneforge-transformers",
                        help="comma-separated: tuneforge-vllm, tuneforge-transformers, vllm-own")
    parser.add_argument("--requests", type=int, default=64, help="requests per round")
    parser.add_argument("--concurrency", default="16,32", help="concurrent clients per round (first: streaming)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    logs = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    results = {kind: bench(kind, args, logs) for kind in args.servers.split(",")}
    print(f"{'server':<24} {'clients':>7} {'stream':>6} {'tok/s':>7} {'1st tok p50':>11} {'p50 s':>6} "
          f"{'errors':>6} {'ping max ms':>11}")
    for kind, result in results.items():
        for run in result["runs"]:
            print(f"{kind:<24} {run['concurrency']:>7} {str(run['stream']):>6} {run['tokens_per_s']:>7} "
                  f"{run['first_token_p50_s']!s:>11} {run['latency_p50_s']!s:>6} {run['errors']:>6} "
                  f"{run['ping_max_ms']:>11}")
        print(f"{kind:<24} started in {result['start_s']} s")
    if "vllm-own" in results:
        peer = results["vllm-own"]["runs"]
        for kind in (k for k in results if k != "vllm-own"):
            ratios = [f"{(r['tokens_per_s'] / p['tokens_per_s']):.2f}x tok/s at {r['concurrency']}"
                      + (" streaming, first token " + f"{r['first_token_p50_s'] / p['first_token_p50_s']:.2f}x"
                         if r["stream"] else "") for r, p in zip(results[kind]["runs"], peer)]
            print(f"{kind} / vllm-own: " + "; ".join(ratios))
    report = {"model_dir": str(args.model_dir), "requests": args.requests, "max_new_tokens": args.max_new_tokens,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"),
              "results": results, "logs": str(logs)}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["errors"] == 0 for res in results.values() for r in res["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
