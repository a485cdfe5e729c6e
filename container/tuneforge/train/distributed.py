"""DeepSpeed ZeRO configurations: named presets, or a JSON file from the `config` channel.

Hyperparameter values are capped at 2500 characters by SageMaker, so a full DeepSpeed JSON
travels as a file in the `config` channel and the hyperparameter names that file.
"""

from __future__ import annotations

import json

from ..errors import HyperparameterError

PRESETS = ("zero2", "zero3", "zero2_offload", "zero3_offload")


def preset(name: str) -> dict:
    stage = 3 if name.startswith("zero3") else 2
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        # model/ must hold real weights, not ZeRO shards
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if name.endswith("_offload"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_allow_untested_optimizer": True,
    }


def deepspeed_config(config, paths) -> dict:
    name = config.deepspeed
    if name in PRESETS:
        return preset(name)
    channel = paths.config_channel()
    candidate = channel / name if channel else None
    if candidate is None or not candidate.is_file():
        raise HyperparameterError(f"{name!r} is neither a preset nor a file in the `config` channel",
                                  where="hyperparameter deepspeed",
                                  fix=f"use one of {', '.join(PRESETS)}, or upload the JSON file in a `config` channel")
    try:
        return json.loads(candidate.read_text())
    except json.JSONDecodeError as exc:
        raise HyperparameterError(f"the DeepSpeed config is not valid JSON (line {exc.lineno}: {exc.msg})",
                                  where=str(candidate), fix="fix the JSON file") from None
