"""Non-finite values: a loss, gradient or weight that is NaN or inf fails the job, naming it."""

from __future__ import annotations

import torch

from ..errors import UserError


class NonFiniteError(UserError):
    """Training produced NaN/inf (loss, gradients or weights): the model would be garbage."""


def check_finite(named_tensors, what: str = "model") -> None:
    """Fail on the first floating-point tensor holding NaN or inf (model/ is then left untouched)."""
    for name, tensor in named_tensors:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta" or not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor.detach())
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise NonFiniteError(
                f"the trained {what} has non-finite weights: {name} holds {bad} of {tensor.numel()} values that are "
                "NaN or inf; model/ was not written",
                fix="training diverged: lower learning_rate, check the data, train in fp32 or bf16 rather than fp16, "
                    "and make sure the base model's own weights are finite")
