"""The Flask app: SageMaker's /ping and /invocations plus TGI- and OpenAI-compatible routes.

The model loads in a background thread of each gunicorn worker (started by the
post_worker_init hook, never in the master: CUDA does not survive fork), so /ping can say
503 while it loads and 200 once it is ready. Every error is JSON {"error", "error_type"}.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import threading
import time

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .engine import DeadlineExceeded, Engine, GenerationFailed, Overloaded
from .metrics import ServeMetrics
from .payloads import Invocation, Parser, PayloadError, invalid, lone_surrogate
from .settings import ServeSettings

log = logging.getLogger("tuneforge.serve")

JSON_TYPES = ("application/json", "text/json", "application/x-json")
JSONLINES_TYPES = ("application/jsonlines", "application/jsonl", "application/x-jsonlines",
                   "application/json-lines", "application/x-ndjson")
TEXT_TYPES = ("text/plain", "application/x-text")
EVENT_STREAM = "text/event-stream"
# Only a body holding a \uD800-\uDFFF escape can parse into a lone surrogate.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
GENERATE_ROUTES = {"/invocations": "invocations", "/": "invocations", "/generate": "generate",
                   "/generate_stream": "generate_stream", "/v1/chat/completions": "chat",
                   "/v1/completions": "completion"}
ERRORS = {Overloaded: (429, "overloaded"), DeadlineExceeded: (503, "timeout"),
          GenerationFailed: (500, "generation")}


def error_type_of(exc: Exception) -> str:
    if isinstance(exc, PayloadError):
        return exc.error_type
    return next((kind for cls, (_, kind) in ERRORS.items() if isinstance(exc, cls)), "generation")


def error_response(status: int, message: str, error_type: str) -> Response:
    return _json({"error": message, "error_type": error_type}, status)


def _json(obj, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status=status, mimetype="application/json", headers=headers)


class ServerState:
    """What one worker holds: the model once loaded, its batching engine, its metrics."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.status, self.error = "loading", None
        self.loaded = self.engine = self.parser = None
        self.metrics = ServeMetrics(queue_depth=lambda: self.engine.queue_depth() if self.engine else 0,
                                    ready=lambda: self.status == "ready")

    def start_loading(self, on_failure=None) -> threading.Thread:
        thread = threading.Thread(target=self._load, args=(on_failure,), name="tuneforge-load", daemon=True)
        thread.start()
        return thread

    def _load(self, on_failure) -> None:
        from .loader import load_model

        started = time.monotonic()
        try:
            loaded = load_model(self.settings)
            self.engine = Engine(loaded, self.settings, self.metrics)
            self.parser = Parser(loaded, self.settings)
            self.loaded = loaded
            self.status = "ready"
            log.info("model ready after %.1f s", time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - reported on /ping and by on_failure
            self.status, self.error = "failed", str(exc).splitlines()[0][:500]
            log.exception("model failed to load: %s", self.error)
            if on_failure is not None:
                on_failure(exc)


def create_app(settings: ServeSettings | None = None, *, load: bool = False) -> Flask:
    """The WSGI app. `load=True` starts loading at once (for use outside gunicorn)."""
    settings = settings or ServeSettings.from_env()
    _configure_logging(settings.log_level)
    app = Flask("tuneforge.serve")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    state = ServerState(settings)
    app.extensions["tuneforge"] = state

    @app.before_request
    def _start_timer():
        g.started = time.monotonic()

    @app.after_request
    def _account(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule else "other"
        started, status = g.get("started", time.monotonic()), response.status_code

        def record():  # on close, so a streamed response counts its whole duration
            state.metrics.requests.inc(route=rule, status=status)
            state.metrics.duration.observe(time.monotonic() - started, route=rule)

        response.call_on_close(record)
        response.headers["x-total-time"] = str(int((time.monotonic() - started) * 1000))
        return response

    @app.get("/ping")
    @app.get("/health")
    def ping():
        if state.status == "ready":
            return _json({"status": "ready"})
        message = "model is loading" if state.status == "loading" else f"model failed to load: {state.error}"
        return error_response(503, message, "unhealthy")

    @app.get("/execution-parameters")
    def execution_parameters():
        # Batch Transform caps MaxConcurrentTransforms x MaxPayloadInMB at 100.
        payload = min(100, max(1, math.ceil(settings.max_body_mb)))
        concurrent = max(1, min(settings.workers * settings.max_batch_size, 100 // payload))
        return _json({"MaxConcurrentTransforms": concurrent, "BatchStrategy": "MULTI_RECORD",
                      "MaxPayloadInMB": payload})

    @app.get("/metrics")
    def metrics():
        return Response(state.metrics.render(), mimetype="text/plain; version=0.0.4")

    @app.get("/v1/models")
    def models():
        ready = _ready(state)
        return _json({"object": "list", "data": [{"id": ready.loaded.info.name, "object": "model",
                                                  "created": 0, "owned_by": "tuneforge"}]})

    @app.get("/info")
    def info():
        ready = _ready(state)
        loaded = ready.loaded
        return _json({"model_id": loaded.info.name, "model_dir": str(loaded.info.model_dir),
                      "architecture": "seq2seq" if loaded.seq2seq else "causal",
                      "adapter_only": loaded.info.adapter_only, "prompt_kind": loaded.info.prompt.kind,
                      "max_input_tokens": loaded.max_input_tokens, "max_total_tokens": loaded.max_total_tokens,
                      "max_batch_size": settings.max_batch_size, "max_stop_sequences": settings.max_stop_sequences,
                      "device": loaded.device, "version": _version()})

    for path, route in GENERATE_ROUTES.items():
        app.add_url_rule(path, f"generate_{route}_{path}", _generate_view(state, route, bare=path == "/generate"),
                         methods=["POST"])

    @app.errorhandler(PayloadError)
    def _payload_error(exc: PayloadError):
        return error_response(exc.status, exc.message, exc.error_type)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc):
        return error_response(413, settings.body_limit_message, "payload_too_large")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return error_response(exc.code or 500, exc.description or exc.name, exc.name.lower().replace(" ", "_"))

    @app.errorhandler(Exception)
    def _any_error(exc: Exception):
        for cls, (status, kind) in ERRORS.items():
            if isinstance(exc, cls):
                return error_response(status, str(exc), kind)
        log.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}", "internal")

    if load:
        state.start_loading()
    return app


def _ready(state: ServerState) -> ServerState:
    if state.status != "ready":
        raise PayloadError(503, "model is loading" if state.status == "loading"
                           else f"model failed to load: {state.error}", "unhealthy")
    return state


def _generate_view(state: ServerState, route: str, bare: bool):
    def view():
        ready = _ready(state)
        invocations, lines = _parse_body(ready, route)
        stream = len(invocations) == 1 and invocations[0].stream
        answer = _answer_type(lines, stream)  # 406 before any compute is spent
        if stream:
            return _stream(ready, invocations[0])
        results = _run(ready, invocations)
        bodies = [_render(ready, inv, res, bare) for inv, res in zip(invocations, results)]
        headers = _timing_headers(ready, invocations, results)
        if answer in JSON_TYPES:  # a JSON lines body asked for JSON gets the list of its answers
            return _json(bodies if lines else bodies[0], headers=headers)
        text = "".join(json.dumps(b, ensure_ascii=False, separators=(",", ":")) + "\n" for b in bodies)
        return Response(text, headers=dict(headers, **{"Content-Type": answer}))

    return view


def _answer_type(lines: bool, stream: bool) -> str:
    """The response's content type, from the Accept header; 406 when none can be produced.

    Absent and */* mean the default: JSON lines for a JSON lines body, else JSON, and events for
    `stream: true`. A stream also goes to an Accept of application/json, as the openai client
    sends that header on streaming calls too.
    """
    if stream:
        offers, produced = [EVENT_STREAM, JSON_TYPES[0]], [EVENT_STREAM]
    else:
        json_first = [JSON_TYPES[0], *JSONLINES_TYPES]
        offers = produced = [*JSONLINES_TYPES, JSON_TYPES[0]] if lines else json_first
    accept = request.accept_mimetypes
    if not accept:
        return produced[0]
    best = accept.best_match(offers)
    if best is None:
        raise PayloadError(406, f"cannot answer with Accept: {request.headers.get('Accept')}; this request can be "
                           f"answered as {', '.join(produced)}", "not_acceptable")
    return EVENT_STREAM if stream else best


def _parse_body(state: ServerState, route: str) -> tuple[list[Invocation], bool]:
    """Content type -> Invocations; the bool says the answer is JSON lines."""
    mimetype = (request.mimetype or "application/json").lower()
    if request.content_length is None and "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        raw = b""  # no length and not chunked: no body (RFC 9112 6.3); never read to EOF
    else:
        raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError(400, "the request body is not UTF-8 text", "malformed_request") from None
    parser = state.parser
    if mimetype in TEXT_TYPES:
        if not text.strip():
            raise invalid("the request body is empty; send the prompt as the body")
        return [parser.text(text)], False
    if mimetype in JSONLINES_TYPES and route == "invocations":
        invocations = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                inv = parser.parse(_loads(line, f"line {number}: "), route)
            except PayloadError as exc:
                if exc.message.startswith("line "):
                    raise
                raise PayloadError(exc.status, f"line {number}: {exc.message}", exc.error_type) from None
            if inv.stream:
                raise invalid(f"line {number}: `stream` is not available for JSON lines")
            invocations.append(inv)
        if not invocations:
            raise invalid("the JSON lines body holds no request")
        return invocations, True
    if mimetype not in JSON_TYPES:
        accepted = JSON_TYPES[:1] + JSONLINES_TYPES[:1] + TEXT_TYPES
        raise PayloadError(415, f"unsupported content type {mimetype!r}; use one of {', '.join(accepted)}",
                           "unsupported_media_type")
    return [parser.parse(_loads(text, ""), route)], False


def _loads(text: str, where: str):
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(400, f"{where}malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                           "malformed_json") from None
    except RecursionError:
        raise PayloadError(400, f"{where}malformed JSON: nested too deeply (more than about "
                           f"{sys.getrecursionlimit()} levels of arrays and objects)", "malformed_json") from None
    if SURROGATE_ESCAPE.search(text):
        path = lone_surrogate(document)
        if path is not None:
            raise invalid(f"{where}`{path}` holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF), which is not "
                          "text; send a complete surrogate pair or the character itself in UTF-8")
    return document


def _run(state: ServerState, invocations: list[Invocation]):
    """Submit prompts before waiting on them, so they share batches.

    A Batch Transform body (MULTI_RECORD JSON lines) may hold thousands of records; they go in
    waves of a few batches, so one body neither fills the queue nor waits in it all at once.
    """
    settings = state.settings
    wave = max(1, min(settings.max_queue // 2, 4 * settings.max_batch_size))
    flat = [req for inv in invocations for req in inv.requests]
    answers = []
    for start in range(0, len(flat), wave):
        jobs = []
        try:
            for req in flat[start:start + wave]:
                jobs.append(state.engine.submit(req))
            for job in jobs:
                left = job.request.deadline - time.monotonic() if job.request.deadline else None
                answers.append(job.wait(None if left is None else max(0.0, left) + 1.0))
        except BaseException:
            state.engine.withdraw(jobs)  # 429, deadline or error: none of this wave is wanted now
            raise
    results, at = [], 0
    for inv in invocations:
        results.append(answers[at:at + len(inv.requests)])
        at += len(inv.requests)
    return results


def _render(state: ServerState, inv: Invocation, results, bare: bool):
    from .responses import render

    return render(inv, results, state.loaded.tokenizer, bare=bare)


def _stream(state: ServerState, inv: Invocation) -> Response:
    from .responses import stream

    job = state.engine.submit(inv.requests[0])  # 429 here still gets a status line
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
               "x-prompt-tokens": str(len(inv.requests[0].prompt_ids))}
    return Response(stream(inv, job), mimetype="text/event-stream", headers=headers)


def _timing_headers(state: ServerState, invocations, results) -> dict:
    """TGI's x-* headers; gunicorn's access log line prints them for every request."""
    flat = [r for group in results for r in group]
    prompt = sum(r.prompt_tokens for r in flat)
    generated = sum(r.generated_tokens for r in flat)
    queue = max(r.queue_time for r in flat)
    inference = max(r.inference_time for r in flat)
    return {"x-compute-type": "gpu" if state.loaded.device.startswith("cuda") else "cpu",
            "x-prompt-tokens": str(prompt), "x-generated-tokens": str(generated),
            "x-queue-time": str(int(queue * 1000)), "x-inference-time": str(int(inference * 1000)),
            "x-time-per-token": str(int(inference * 1000 / max(1, generated)))}


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("tuneforge")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        logger.addHandler(handler)


def _version() -> str:
    from .. import __version__

    return __version__
