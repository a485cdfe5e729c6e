"""Liger kernels on CUDA: Triton RMSNorm, RoPE, SwiGLU and fused linear cross-entropy.

The `liger_kernel` hyperparameter: auto = on where the package is installed (the GPU image
installs it), a CUDA device is used and Liger patches the model's family; true = the same, but
a job that cannot have them fails instead of running without; false = off. The kernels are
applied by the Trainer itself (TrainingArguments.use_liger_kernel, which calls Liger's
`_apply_liger_kernel_to_instance` on the model under PEFT), so nothing here patches upstream
code. liger-kernel is imported only to read which families it supports: a machine without it
(CPU) never imports it.
"""

from __future__ import annotations

import importlib.util

from ..errors import HyperparameterError


def installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def supported_families() -> tuple[set[str], str | None]:
    """Model types Liger can patch, and why none where it cannot be imported (not installed, or
    built for another transformers or torch)."""
    if not installed():
        return set(), "liger-kernel is not installed (the GPU image installs it)"
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception as exc:  # an import error inside liger must not stop a job that can run without it
        return set(), f"liger-kernel cannot be imported here ({type(exc).__name__}: {exc})"
    return set(MODEL_TYPE_TO_APPLY_LIGER_FN), None


def plan_liger(setting: str, model_type: str, *, cuda: bool, seq2seq: bool) -> dict:
    """Whether to apply Liger's kernels, for metrics.json. liger_kernel=true fails where they cannot be."""
    why_not = None
    if setting == "false":
        why_not = "liger_kernel=false"
    elif not cuda:
        why_not = "Liger's kernels are Triton GPU kernels: no CUDA device here"
    elif seq2seq:
        why_not = "encoder-decoder models are not supported by Liger"
    else:
        families, why_not = supported_families()
        if why_not is None and model_type not in families:
            why_not = f"Liger does not support the {model_type} architecture"
    if why_not is None:
        return {"setting": setting, "enabled": True,
                "kernels": "Liger's defaults for the family (RMSNorm, RoPE, SwiGLU/GeGLU, fused linear cross-entropy)"}
    if setting == "true":
        raise HyperparameterError(f"liger_kernel=true is not possible here: {why_not}", where="hyperparameter liger_kernel",
                                  fix="set liger_kernel=auto or liger_kernel=false")
    return {"setting": setting, "enabled": False, "why": why_not}
