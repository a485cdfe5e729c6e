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
    """The wait queue is full (answered 429)."""


class DeadlineExceeded(Exception):
    """A non-streaming request ran past the server deadline (answered 503)."""


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
