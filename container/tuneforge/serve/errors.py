"""The errors a request can meet, each with its HTTP status and the `error_type` of the JSON body.

Every error answer is `{"error": "<message>", "error_type": "<type>"}` (docs/serving.md lists
them). PayloadError carries its own status; the engine's errors map through ENGINE_ERRORS.
"""

from __future__ import annotations


class PayloadError(Exception):
    """A request the server cannot answer; status and error_type go into the JSON error body."""

    def __init__(self, status: int, message: str, error_type: str = "validation"):
        super().__init__(message)
        self.status, self.message, self.error_type = status, message, error_type


def invalid(message: str) -> PayloadError:
    return PayloadError(422, message, "validation")


class Overloaded(Exception):
    """The wait queue is full, or its wait too long (answered 429, Retry-After `retry_after` s)."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(Exception):
    """A non-streaming request ran past the server deadline (answered 503)."""


DEADLINE_PASSED = ("generation ran past the server deadline (TUNEFORGE_REQUEST_DEADLINE); raise it, ask for "
                   "fewer new tokens, or stream the answer (streams have no deadline)")


class GenerationFailed(Exception):
    """generate raised; the message is short and safe to return (answered 500)."""


ENGINE_ERRORS = {Overloaded: (429, "overloaded"), DeadlineExceeded: (503, "timeout"),
                 GenerationFailed: (500, "generation")}


def status_of(exc: Exception) -> tuple[int, str] | None:
    """(HTTP status, error_type) of a known error; None for anything unexpected."""
    if isinstance(exc, PayloadError):
        return exc.status, exc.error_type
    return next((answer for cls, answer in ENGINE_ERRORS.items() if isinstance(exc, cls)), None)


def error_type_of(exc: Exception) -> str:
    known = status_of(exc)
    return known[1] if known else "generation"


def add_error_handlers(app, respond, body_limit_message: str, known=status_of) -> None:
    """Every error a Flask app answers, as JSON through `respond(status, message, error_type)`.

    `known(exc)` gives (status, error_type) of an expected error, whose message is its text;
    anything else is logged with its traceback and answered 500 without details.
    """
    import logging

    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

    log = logging.getLogger("tuneforge.serve")

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc):
        return respond(413, body_limit_message, "payload_too_large")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return respond(exc.code or 500, exc.description or exc.name, exc.name.lower().replace(" ", "_"))

    @app.errorhandler(Exception)
    def _any_error(exc: Exception):
        answer = known(exc)
        if answer is not None:
            response = respond(answer[0], str(exc), answer[1])
            if getattr(exc, "retry_after", None):
                response.headers["Retry-After"] = str(exc.retry_after)
            return response
        log.exception("unhandled error")
        return respond(500, f"internal error: {type(exc).__name__}", "internal")
