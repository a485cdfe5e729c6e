"""Generating routes: request body -> Invocations -> the engine -> the answer, whole or streamed.

The body's content type picks the reader (JSON, JSON lines, plain text); the Accept header picks
the answer's type, checked before any compute is spent (406 otherwise).
"""

from __future__ import annotations

import json
import time

from flask import Response, request

from ..json_body import JsonBodyError, read_json
from .errors import PayloadError, invalid
from .http import EVENT_STREAM, JSON_TYPES, JSONLINES_TYPES, TEXT_TYPES, json_response
from .invocation import Invocation

# Fields only a text-to-image request (Stable Diffusion) carries: such a body sent to a language
# model gets a clear error instead of a generation that ignores them.
IMAGE_FIELDS = ("width", "height", "num_inference_steps", "guidance_scale", "negative_prompt",
                "num_images_per_prompt")


def generate_view(ready_state, route: str, bare: bool):
    """The view of one generating route; `ready_state()` is the worker's state once the model is loaded."""

    def view():
        ready = ready_state()
        invocations, lines = _parse_body(ready, route)
        stream = len(invocations) == 1 and invocations[0].stream
        answer = _answer_type(lines, stream)  # 406 before any compute is spent
        if stream:
            return _stream(ready, invocations[0])
        results = _run(ready, invocations)
        bodies = [_render(ready, inv, res, bare) for inv, res in zip(invocations, results)]
        headers = _timing_headers(ready, invocations, results)
        if answer in JSON_TYPES:  # a JSON lines body asked for JSON gets the list of its answers
            return json_response(bodies if lines else bodies[0], headers=headers)
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


def _parse_body(state, route: str) -> tuple[list[Invocation], bool]:
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
            inv = parser.validate(loads(line, f"line {number}: "), route)
            if isinstance(inv, PayloadError):
                raise PayloadError(inv.status, f"line {number}: {inv.message}", inv.error_type)
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
    document = loads(text, "")
    _refuse_image_request(document)
    return [parser.parse(document, route)], False


def _refuse_image_request(document) -> None:
    image_fields = [k for k in IMAGE_FIELDS if isinstance(document, dict) and k in document]
    if image_fields or "jpeg" in request.headers.get("Accept", "").lower():
        what = f"`{image_fields[0]}`" if image_fields else "Accept: application/json;jpeg"
        raise PayloadError(400, f"{what} belongs to a text-to-image request, but this endpoint serves a language "
                           "model (text generation); text-to-image needs a Stable Diffusion pipeline in model/",
                           "wrong_model_kind")


def loads(text: str, where: str):
    try:
        return read_json(text)
    except JsonBodyError as exc:
        if exc.kind == "malformed_json":
            raise PayloadError(400, where + exc.message, exc.kind) from None
        raise invalid(where + exc.message) from None


def _run(state, invocations: list[Invocation]):
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


def _render(state, inv: Invocation, results, bare: bool):
    from .responses import render

    return render(inv, results, state.loaded.tokenizer, bare=bare)


def _stream(state, inv: Invocation) -> Response:
    from .responses import stream

    job = state.engine.submit(inv.requests[0])  # 429 here still gets a status line
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
               "x-prompt-tokens": str(len(inv.requests[0].prompt_ids))}
    return Response(stream(inv, job), mimetype="text/event-stream", headers=headers)


def _timing_headers(state, invocations, results) -> dict:
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
