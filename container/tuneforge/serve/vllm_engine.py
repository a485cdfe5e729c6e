"""The worker's side of the vLLM engine: the same submit/Job interface as engine.Engine.

Each request goes to the instance's vLLM server (vllm_launch.py) as token ids on /v1/completions,
streamed back with each new token's id and log-probability. The tokens walk the same per-sequence
bookkeeping as the transformers engine (engine._Row: incremental detokenization, stop sequences,
the stream's hold-back, end of sequence), so the text, the stop handling and the answers' shapes
are the same on both engines. A request whose client left, or whose deadline passed, closes its
connection, and vLLM drops it from the batch.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time

from . import admission
from .engine import GenerationRequest, Job, Result, Sequence, Token, _Row
from .errors import DEADLINE_PASSED, DeadlineExceeded, GenerationFailed, Overloaded
from .metrics import ServeMetrics
from .vllm_launch import ADAPTER_NAME, SERVED_NAME, lora_name

log = logging.getLogger(__name__)
TOKEN_ID_PREFIX = "token_id:"
CONNECT_TIMEOUT_S = 10


class VllmEngine:
    def __init__(self, loaded, settings, metrics: ServeMetrics | None = None):
        self.loaded, self.tokenizer = loaded, loaded.tokenizer
        self.model_name = ADAPTER_NAME if loaded.info.adapter_only else SERVED_NAME
        host, port = settings.vllm_url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.max_queue = settings.max_queue
        self.metrics = metrics or ServeMetrics()
        self.deadline_s = settings.request_deadline
        self._waiting: dict[int, float] = {}  # job id -> submitted, until vLLM gives its first token
        self._in_flight = 0
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ callers
    def submit(self, request: GenerationRequest) -> Job:
        job = Job(request)
        with self._lock:
            if self._closed:
                raise GenerationFailed("the server is shutting down")
            if self._in_flight >= self.max_queue:
                raise Overloaded(f"the server has {self.max_queue} requests in flight (TUNEFORGE_MAX_QUEUE); "
                                 "retry later")
            oldest = min(self._waiting.values(), default=None)
            admission.admit(request, None if oldest is None else job.created - oldest, self.deadline_s)
            self._in_flight += 1
            self._waiting[job.id] = job.created
        self.metrics.input_tokens.inc(len(request.prompt_ids))
        self.metrics.queue_depth.refresh()
        threading.Thread(target=self._run, args=(job,), name=f"tuneforge-vllm-{job.id}", daemon=True).start()
        return job

    def withdraw(self, jobs) -> None:
        for job in jobs:
            job.cancelled = True

    def queue_depth(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        self._closed = True

    def engine_metrics(self) -> str:
        """vLLM's Prometheus series (vllm:*), for /metrics; empty when the engine does not answer."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            text = response.read().decode() if response.status == 200 else ""
        except (OSError, http.client.HTTPException):
            text = ""
        finally:
            conn.close()
        wanted = [line for line in text.splitlines()
                  if line.startswith(("vllm:", "# HELP vllm:", "# TYPE vllm:"))]
        return "\n".join(wanted) + "\n" if wanted else ""

    # ------------------------------------------------------------------ one request
    def _run(self, job: Job) -> None:
        started = None
        try:
            request = job.request
            seed = request.sampling.seed
            if request.sampling.do_sample and seed is None:
                seed = random.randrange(1 << 63)  # reported back, as the transformers engine does
            job.seed = seed
            rows = [_Row(job, i, self.tokenizer, self.loaded) for i in range(request.n)]
            body = self._body(request, seed)
            conn = http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S)
            try:
                conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
                response = conn.getresponse()
                if response.status != 200:
                    raise GenerationFailed(f"the vLLM engine answered {response.status}: "
                                           f"{response.read()[:300].decode('utf-8', 'replace')}")
                conn.sock.settimeout(None)  # tokens may be far apart under load; deadlines are ours
                started = self._first_token_seen(job, started)
                if body["stream"]:
                    scores = None
                    for chunk in _events(response):
                        started = self._first_token_seen(job, started)
                        if self._feed(job, rows, chunk):
                            break  # every sequence finished here (stop sequence), or the job is off
                else:
                    answer = json.loads(response.read())
                    started = self._first_token_seen(job, started)
                    scores = self._prompt_scores(answer["choices"][0], request.prompt_logprobs)
                    if request.max_new_tokens > 0:
                        self._feed(job, rows, answer)
            finally:
                conn.close()  # before the sequences are finished: vLLM aborts what is left
            self._finish(job, rows, scores, seed, started)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            log.exception("vLLM request failed")
            job._finish(error=GenerationFailed(f"generation failed: {type(exc).__name__}: {str(exc)[:200]}"))
        except Exception as exc:  # noqa: BLE001 - the caller gets it as the job's error
            job._finish(error=exc)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._waiting.pop(job.id, None)
            self.metrics.queue_depth.refresh()

    def _first_token_seen(self, job: Job, started: float | None) -> float | None:
        if started is not None:
            return started
        job.started = time.monotonic()
        with self._lock:
            self._waiting.pop(job.id, None)
        self.metrics.queue_time.observe(job.started - job.created)
        return job.started

    def _body(self, request: GenerationRequest, seed: int | None) -> dict:
        sampling = request.sampling
        scored = request.prompt_logprobs is not None
        body = {
            # vLLM refuses n > 1 with greedy decoding: one sequence, copied to every row (_feed)
            "model": lora_name(request.adapter) if request.adapter else self.model_name, "prompt": list(request.prompt_ids), "n": request.n if sampling.do_sample else 1,
            # vLLM scores a prompt only in a whole answer; such requests (echo + logprobs) are short
            "stream": not scored, "max_tokens": max(1, request.max_new_tokens),  # 0: the prompt scored only
            "temperature": sampling.temperature if sampling.do_sample else 0.0,
            "top_p": sampling.top_p if sampling.do_sample else 1.0,
            "top_k": sampling.top_k if sampling.do_sample and sampling.top_k else -1,
            "repetition_penalty": sampling.repetition_penalty, "seed": seed,
            "logprobs": request.top_logprobs, "return_tokens_as_token_ids": True, "return_token_ids": True,
            "stop_token_ids": list(self.loaded.eos_token_ids), "skip_special_tokens": False,
        }
        if scored:
            body["prompt_logprobs"] = request.prompt_logprobs
        if request.guide is not None:
            body["structured_outputs"] = {"regex": request.guide.regex}
        if sampling.no_repeat_ngram_size:  # vllm_plugin/tuneforge_vllm_ngram.py, loaded by the engine
            body["vllm_xargs"] = {"no_repeat_ngram_size": sampling.no_repeat_ngram_size}
        return body

    def _feed(self, job: Job, rows: list[_Row], chunk: dict) -> bool:
        """Add a chunk's new tokens to their rows; True when nothing more is wanted."""
        now = time.monotonic()
        deadline = job.request.deadline
        for choice in chunk.get("choices", []):
            greedy_copies = not job.request.sampling.do_sample
            for row in rows if greedy_copies else [rows[choice["index"]]]:
                self._feed_row(job, row, choice, now)
        if job.cancelled or (deadline is not None and now >= deadline):
            for row in rows:
                if not row.finished:
                    row.finish("cancelled" if job.cancelled else "deadline")
        return all(row.finished for row in rows)

    def _feed_row(self, job: Job, row: _Row, choice: dict, now: float) -> None:
        if row.finished:
            return
        deadline = job.request.deadline
        ids = choice.get("token_ids") or []
        for token_id, (logprob, top) in zip(ids, _token_logprobs(choice.get("logprobs"), len(ids), self.tokenizer)):
            if job.cancelled:
                row.finish("cancelled")
            elif deadline is not None and now >= deadline:
                row.finish("deadline")
            if row.finished:
                return
            row.add(token_id, logprob, top[:job.request.top_logprobs])
        if choice.get("finish_reason") and not row.finished:
            # "stop" without the EOS id among the tokens: vLLM ended on a stop token it kept out
            row.finish("eos_token" if choice["finish_reason"] == "stop" else "length")

    def _prompt_scores(self, choice: dict, k: int) -> list[Token] | None:
        """The prompt's tokens with their log-probabilities and the k most likely alternatives."""
        entries, ids = choice.get("prompt_logprobs"), choice.get("prompt_token_ids")
        if entries is None or ids is None:
            return None
        decode, special = self.tokenizer.decode, self.loaded.special_ids
        tokens = []
        for token_id, entry in zip(ids, entries):
            entry = entry or {}
            ranked = sorted(((int(i), v) for i, v in entry.items() if v.get("rank") and v["rank"] <= k),
                            key=lambda item: item[1]["rank"])[:k]
            chosen = entry.get(str(token_id))
            tokens.append(Token(token_id, decode([token_id]), chosen["logprob"] if chosen else None,
                                token_id in special, [(i, decode([i]), v["logprob"]) for i, v in ranked]))
        return tokens

    def _finish(self, job: Job, rows: list[_Row], scores, seed, started) -> None:
        if job.request.deadline is not None and any(r.finish_reason == "deadline" for r in rows):
            job._finish(error=DeadlineExceeded(DEADLINE_PASSED))
            return
        if job.cancelled:
            job._finish(error=DeadlineExceeded("the client went away"))
            return
        sequences = [row.sequence() for row in rows] if job.request.max_new_tokens > 0 else [
            Sequence(i, "", [], "length") for i in range(job.request.n)]
        now = time.monotonic()
        started = started or now
        result = Result(sequences=sequences, prompt_tokens=len(job.request.prompt_ids), seed=seed,
                        queue_time=started - job.created, inference_time=now - started, prompt_scores=scores)
        self.metrics.generated_tokens.inc(result.generated_tokens)
        job._finish(result)


def _events(response):
    """The JSON objects of a server-sent event stream, until [DONE]."""
    for raw in response:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        event = json.loads(data)
        if "error" in event:
            raise GenerationFailed(f"the vLLM engine failed: {str(event['error'])[:300]}")
        yield event


def _token_logprobs(logprobs: dict | None, count: int, tokenizer) -> list[tuple[float | None, list]]:
    """(logprob, [(id, text, logprob), ...] most likely first) for each of a chunk's tokens."""
    if not logprobs:
        return [(None, [])] * count
    out = []
    for value, top in zip(logprobs.get("token_logprobs") or [], logprobs.get("top_logprobs") or []):
        ids = [(int(key.removeprefix(TOKEN_ID_PREFIX)), lp) for key, lp in (top or {}).items()]
        out.append((value, [(i, tokenizer.decode([i]), lp) for i, lp in sorted(ids, key=lambda t: -t[1])]))
    return out + [(None, [])] * (count - len(out))
