"""Content types the server reads and writes, and its one JSON response helper."""

from __future__ import annotations

import json

from flask import Response, has_request_context, request

JSON_TYPES = ("application/json", "text/json", "application/x-json")
JSONLINES_TYPES = ("application/jsonlines", "application/jsonl", "application/x-jsonlines",
                   "application/json-lines", "application/x-ndjson")
TEXT_TYPES = ("text/plain", "application/x-text")  # x-text: JumpStart's raw-text prompt
EVENT_STREAM = "text/event-stream"
OPENAI_PREFIXES = ("/v1/", "/invocations/v1/")


def json_response(obj, status: int = 200, headers: dict | None = None) -> Response:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status=status, mimetype="application/json", headers=headers)


RETRY_AFTER_S = 1


def error_response(status: int, message: str, error_type: str) -> Response:
    """{"error": message, "error_type": type}; on the OpenAI routes (/v1/...) OpenAI's own shape,
    {"error": {"message", "type", "param", "code"}}, which the openai client shows to its caller."""
    if has_request_context() and request.path.startswith(OPENAI_PREFIXES):
        response = json_response({"error": {"message": message, "type": error_type, "param": None, "code": status}},
                                 status)
    else:
        response = json_response({"error": message, "error_type": error_type}, status)
    if status in (429, 503):  # a full queue or a deadline: clients (and SageMaker's SDK) retry after this
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response
