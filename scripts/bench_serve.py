#!/usr/bin/env python
"""Serving throughput: dynamic batching vs one request at a time, same model, same run.

Starts the real `serve` (gunicorn) twice on a loopback port, one after the other so they never
share the CPU: once as configured (batching on) and once with TUNEFORGE_MAX_BATCH_SIZE=1 (the
peer: every request gets its own generate call). Each run sends N concurrent clients x M greedy
requests and measures requests/s, generated tokens/s and latency; the ratio is printed last.

    .venv/bin/python scripts/bench_serve.py --clients 16 --requests 10 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ITEMS = ["banana", "lemon", "cherry", "tomato", "lime", "cucumber", "spinach", "blueberry", "sapphire",
         "plum", "eggplant", "carrot", "pumpkin", "coal", "raven", "snow", "milk", "walnut", "ruby", "salmon"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, env: dict, log_path: Path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge.serve.server", "--model-dir", str(model_dir),
                             "--host", "127.0.0.1", "--port", str(port)],
                            env=dict(os.environ, **env), stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log_path}")
        try:
            if requests.get(url + "/ping", timeout=2).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server not ready after 300 s; see {log_path}")


def run_load(url: str, clients: int, per_client: int, max_new_tokens: int) -> dict:
    def client(i: int):
        out = []
        with requests.Session() as session:
            for j in range(per_client):
                prompt = f"What color is the {ITEMS[(i + j) % len(ITEMS)]}? Answer {i}-{j}."
                started = time.perf_counter()
                r = session.post(url + "/invocations", timeout=600,
                                 json={"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens}})
                out.append((r.status_code, int(r.headers.get("x-generated-tokens", 0)), time.perf_counter() - started))
        return out

    for i in range(3):  # warm-up: first-call allocations, lazy imports
        client(i)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        rows = [row for part in pool.map(client, range(clients)) for row in part]
    wall = time.perf_counter() - started
    errors = sum(1 for status, _, _ in rows if status != 200)
    tokens = sum(t for _, t, _ in rows)
    latencies = sorted(lat for _, _, lat in rows)
    return {"requests": len(rows), "errors": errors, "seconds": round(wall, 3),
            "requests_per_s": round(len(rows) / wall, 2), "tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1)}


def bench(model_dir: Path, name: str, env: dict, args, logs: Path) -> dict:
    proc, url = start_server(model_dir, env, logs / f"{name}.log")
    try:
        return run_load(url, args.clients, args.requests, args.max_new_tokens)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="model folder (default: the tiny random llama)")
    parser.add_argument("--family", default="llama", help="tiny model family when no --model-dir")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=16, help="batching run's TUNEFORGE_MAX_BATCH_SIZE")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    if args.model_dir is None:
        from tuneforge.tiny import tiny_model

        args.model_dir = tiny_model(args.family)
    common = {"TUNEFORGE_TORCH_THREADS": str(args.torch_threads), "TUNEFORGE_ACCESS_LOG": "off",
              "TOKENIZERS_PARALLELISM": "false"}
    logs = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    batched = bench(args.model_dir, "batched", dict(common, TUNEFORGE_MAX_BATCH_SIZE=str(args.max_batch_size)),
                    args, logs)
    single = bench(args.model_dir, "one-at-a-time", dict(common, TUNEFORGE_MAX_BATCH_SIZE="1"), args, logs)
    ratio = {"requests_per_s": round(batched["requests_per_s"] / single["requests_per_s"], 2),
             "tokens_per_s": round(batched["tokens_per_s"] / single["tokens_per_s"], 2)}
    report = {"model_dir": str(args.model_dir), "clients": args.clients, "requests_per_client": args.requests,
              "max_new_tokens": args.max_new_tokens, "max_batch_size": args.max_batch_size,
              "torch_threads": args.torch_threads, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "date": time.strftime("%Y-%m-%d"), "batched": batched, "one_at_a_time": single, "ratio": ratio}
    print(f"{'run':<14} {'req/s':>8} {'tok/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'errors':>6}")
    for name, row in (("batched", batched), ("one-at-a-time", single)):
        print(f"{name:<14} {row['requests_per_s']:>8} {row['tokens_per_s']:>8} {row['p50_ms']:>8} "
              f"{row['p95_ms']:>8} {row['errors']:>6}")
    print(f"ratio (batched / one-at-a-time): {ratio['requests_per_s']}x requests/s, "
          f"{ratio['tokens_per_s']}x tokens/s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if batched["errors"] == 0 and single["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
