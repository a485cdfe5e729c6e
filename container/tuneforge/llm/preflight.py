"""Memory preflight: before loading weights on GPUs, estimate what training needs per GPU and fail
fast, with the numbers and the settings that would fit, instead of an out-of-memory error
minutes (or, at save time, hours) later.

The estimate (per GPU, bytes) follows the usual accounting for mixed-precision Adam:
- weights: frozen base parameters at their load width (bf16/fp16 2, int8 1, nf4/fp4 ~0.56);
  trainable parameters as fp32 masters (4);
- gradients: 4 per trainable parameter; Adam moments: 8 per trainable parameter;
- ZeRO-2 divides gradients and optimizer state by the number of GPUs, ZeRO-3 and FSDP full shard
  divide weights too; offload moves optimizer state (and, with ZeRO-3, weights) to host memory;
- activations: ~34 bytes x tokens x hidden per decoder layer (16-bit, memory-efficient
  attention; Korthikanti et al. 2022), or 2 bytes x tokens x hidden per layer plus one layer's
  worth with gradient checkpointing; plus the logits (16-bit, their fp32 copy for the loss and its
  gradient: 10 bytes x tokens x vocabulary; with the chunked loss, llm/loss.py, only CHUNK
  tokens' worth);
- 1 GiB for the CUDA context and allocator slack.
It is an estimate, not a bound: TUNEFORGE_SKIP_PREFLIGHT=1 trains anyway.

`estimate` and `check` are pure functions (unit-tested with made-up device sizes);
`preflight` takes a job's inputs (`PlanInputs`) on a GPU machine.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from ..contract import train_env
from ..errors import ResourceError

log = logging.getLogger(__name__)

GiB = 1024 ** 3
OVERHEAD = 1 * GiB
WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "nf4": 0.56, "fp4": 0.56}


@dataclass(frozen=True)
class MemoryPlan:
    total_params: int
    trainable_params: int          # = total_params for full fine-tuning
    hidden_size: int
    num_layers: int
    vocab_size: int
    batch_size: int                # per GPU
    seq_len: int
    devices: int = 1               # GPUs the model and optimizer can be sharded over
    weight_format: str = "bf16"    # load width of the frozen base: fp32|bf16|fp16|int8|nf4|fp4
    sharding: str = "none"         # none | zero2 | zero3 | fsdp
    offload: bool = False          # DeepSpeed offload (optimizer; weights too under ZeRO-3)
    gradient_checkpointing: bool = False
    chunked_loss: bool = False     # llm/loss.py: full-vocabulary logits for CHUNK positions at a time
    lora_trainable_params: int | None = None  # what LoRA would train, for the suggestions


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    overhead: float = OVERHEAD

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def describe(self) -> str:
        parts = ", ".join(f"{name} {getattr(self, name) / GiB:.1f}"
                          for name in ("weights", "gradients", "optimizer", "activations", "overhead"))
        return f"{self.total / GiB:.1f} GiB ({parts})"


def estimate(plan: MemoryPlan) -> MemoryEstimate:
    n = max(1, plan.devices)
    frozen = max(0, plan.total_params - plan.trainable_params)
    weights = frozen * WEIGHT_BYTES[plan.weight_format] + plan.trainable_params * 4.0
    gradients = plan.trainable_params * 4.0
    optimizer = plan.trainable_params * 8.0
    if plan.sharding in ("zero3", "fsdp"):
        weights, gradients, optimizer = weights / n, gradients / n, optimizer / n
    elif plan.sharding == "zero2":
        gradients, optimizer = gradients / n, optimizer / n
    if plan.offload:
        optimizer = 0.0
        if plan.sharding == "zero3":  # only the layers in flight stay on the GPU
            weights = 2 * weights / max(1, plan.num_layers)
    tokens = plan.batch_size * plan.seq_len
    layer = 34.0 * tokens * plan.hidden_size
    if plan.gradient_checkpointing:
        activations = 2.0 * tokens * plan.hidden_size * plan.num_layers + layer
    else:
        activations = layer * plan.num_layers
    from .loss import CHUNK

    logit_tokens = min(tokens, CHUNK) if plan.chunked_loss else tokens
    activations += 10.0 * logit_tokens * plan.vocab_size
    return MemoryEstimate(weights, gradients, optimizer, activations)


def alternatives(plan: MemoryPlan) -> list[tuple[str, MemoryPlan]]:
    """Settings a user can change, each applied alone, then all together."""
    options: list[tuple[str, MemoryPlan]] = []
    lora = plan.lora_trainable_params
    full = plan.trainable_params == plan.total_params
    if full and lora:
        options.append(("peft_type=lora", dataclasses.replace(plan, trainable_params=lora)))
    if lora and plan.weight_format not in ("nf4", "fp4"):
        options.append(("QLoRA (peft_type=lora, load_in_4bit=True)",
                        dataclasses.replace(plan, trainable_params=lora, weight_format="nf4")))
    if plan.devices > 1 and plan.sharding != "zero3":
        options.append(("deepspeed=zero3", dataclasses.replace(plan, sharding="zero3", offload=False)))
    if not (plan.sharding == "zero3" and plan.offload):
        options.append(("deepspeed=zero3_offload", dataclasses.replace(plan, sharding="zero3", offload=True)))
    if plan.batch_size > 1:
        options.append(("per_device_train_batch_size=1 (raise gradient_accumulation_steps to keep the batch)",
                        dataclasses.replace(plan, batch_size=1)))
    if not plan.gradient_checkpointing:
        options.append(("gradient_checkpointing=True", dataclasses.replace(plan, gradient_checkpointing=True)))
    everything = dataclasses.replace(plan, batch_size=1, gradient_checkpointing=True, sharding="zero3", offload=True,
                                     **({"trainable_params": lora, "weight_format": "nf4"} if lora else {}))
    options.append(("all of these together", everything))
    return options


def check(plan: MemoryPlan, device_bytes: float, *, headroom: float = 0.95) -> MemoryEstimate:
    """Return the estimate, or raise ResourceError naming what would fit on `device_bytes` GPUs."""
    need = estimate(plan)
    if need.total <= headroom * device_bytes:
        return need
    fits = []
    for label, variant in alternatives(plan):
        total = estimate(variant).total
        if total <= headroom * device_bytes:
            fits.append(f"{label} (~{total / GiB:.1f} GiB)")
    fix = ("options that fit: " + "; ".join(fits)) if fits else "no single setting fits: use GPUs with more memory or more GPUs"
    raise ResourceError(
        f"training needs about {need.describe()} per GPU (batch {plan.batch_size} x {plan.seq_len} tokens, "
        f"{plan.total_params / 1e9:.2f}B parameters, {plan.trainable_params / 1e6:.1f}M trainable, "
        f"{plan.sharding if plan.sharding != 'none' else 'no sharding'} over {plan.devices} GPU(s)) "
        f"and each GPU has {device_bytes / GiB:.1f} GiB",
        where="GPU memory preflight",
        fix=f"{fix}; or set TUNEFORGE_SKIP_PREFLIGHT=1 to try anyway")


# ---------------------------------------------------------------- inputs from a real job
def count_parameters(model_config, config, *, seq2seq: bool) -> tuple[int, int]:
    """(total, LoRA-trainable) parameters, from a weightless (meta-device) copy of the model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from ..modeling import default_lora_targets

    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(model_config, trust_remote_code=config.trust_remote_code)
    total = sum(p.numel() for p in model.parameters())
    targets = config.target_modules.strip() or default_lora_targets(model)
    names = None if targets == "all-linear" else {t.strip() for t in targets.split(",") if t.strip()}
    output = model.get_output_embeddings()
    lora = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is output:
            continue
        if names is None or name.split(".")[-1] in names:
            lora += config.lora_r * (module.in_features + module.out_features)
    return total, lora


def config_dim(model_config, *names, default=0) -> int:
    for name in names:
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


@dataclass(frozen=True)
class PlanInputs:
    """What a job's plan needs besides the model config: the hyperparameters, the training dtype
    and whether FSDP shards the weights."""
    config: object
    dtype: object
    fsdp_active: bool


def plan_for(job: PlanInputs, model_config, seq_len: int, ds_config: dict | None) -> MemoryPlan:
    from ..job.distributed import offloads, world_size, zero_stage

    cfg = job.config
    seq2seq = bool(getattr(model_config, "is_encoder_decoder", False))
    total, lora = count_parameters(model_config, cfg, seq2seq=seq2seq)
    layers = config_dim(model_config, "num_hidden_layers", "n_layer", "num_layers")
    layers += config_dim(model_config, "num_decoder_layers") if seq2seq else 0
    stage = zero_stage(ds_config)
    sharding = {2: "zero2", 3: "zero3"}.get(stage, "fsdp" if job.fsdp_active else "none")
    fmt = cfg.quantization if cfg.quantization != "none" else \
        {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(job.dtype), "fp32")
    return MemoryPlan(
        total_params=total, trainable_params=lora if cfg.use_lora else total,
        hidden_size=config_dim(model_config, "hidden_size", "n_embd", "d_model"), num_layers=layers,
        vocab_size=config_dim(model_config, "vocab_size"), batch_size=cfg.per_device_train_batch_size, seq_len=seq_len,
        devices=world_size(), weight_format=fmt, sharding=sharding, offload=offloads(ds_config),
        gradient_checkpointing=cfg.gradient_checkpointing, lora_trainable_params=lora,
        chunked_loss=uses_chunked_loss(model_config, cfg, seq2seq=seq2seq, sharding=sharding))


def uses_chunked_loss(model_config, cfg, *, seq2seq: bool, sharding: str) -> bool:
    """Whether train/loss.plan_loss will skip the full logits, decided from the config before loading
    (Liger's fused loss builds no full logits either, so it counts too)."""
    from ..families import CHUNKED_LOSS_FAMILIES

    return (not seq2seq and sharding not in ("zero3", "fsdp") and not cfg.label_smoothing_factor
            and getattr(model_config, "model_type", "") in CHUNKED_LOSS_FAMILIES
            and not getattr(model_config, "output_router_logits", False))


def preflight(job: PlanInputs, model_config, seq_len: int, ds_config: dict | None) -> MemoryEstimate | None:
    """On GPUs: estimate and compare with the smallest visible GPU; None where it does not apply."""
    import torch

    if not torch.cuda.is_available() or model_config is None:
        return None
    if train_env().skip_preflight:
        log.warning("memory preflight skipped (TUNEFORGE_SKIP_PREFLIGHT)")
        return None
    plan = plan_for(job, model_config, seq_len, ds_config)
    device_bytes = min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    need = check(plan, device_bytes)
    log.info("memory preflight: about %s per GPU of %.1f GiB", need.describe(), device_bytes / GiB)
    return need
