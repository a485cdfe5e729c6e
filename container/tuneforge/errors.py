"""Errors a user can cause (data, hyperparameters, payloads), each saying where and how to fix it.

The first line of str(error) is what goes first in /opt/ml/output/failure, so it must stand alone:
what is wrong, where (file, line, field), and what to do about it.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user supplied is wrong; the message names it and the fix."""

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text = f"{text.rstrip('.')}. Fix: {self.fix}"
        return text


class DataError(UserError):
    """A training or validation file is malformed or does not match the chosen format."""


class HyperparameterError(UserError):
    """A hyperparameter is unknown, of the wrong type or out of range."""


class ModelError(UserError):
    """The base model is missing or cannot be loaded as asked."""


class ResourceError(UserError):
    """The job asks for something this machine cannot do (GPU-only features, memory)."""


class EvaluationGateFailed(UserError):
    """The fine-tune missed a score the job asked for (eval_min_score, eval_max_regression); model/ is kept."""
