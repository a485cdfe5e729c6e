"""How the model is spread over processes: DeepSpeed ZeRO configs, FSDP settings, collectives.

Hyperparameter values are capped at 2500 characters by SageMaker, so a full DeepSpeed JSON
travels as a file in the `config` channel and the hyperparameter names that file.

FSDP through accelerate/the HF Trainer only exists on GPUs: on CPU accelerate silently runs DDP
(it never switches to FSDP from MULTI_CPU). tuneforge says so in the log and in metrics.json and
trains with DDP, so the hyperparameters of a GPU job also run on a laptop (docs/scale.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass

from ..contract import train_env
from ..errors import HyperparameterError

log = logging.getLogger(__name__)

PRESETS = ("zero2", "zero3", "zero2_offload", "zero3_offload")


@dataclass(frozen=True)
class Placement:
    """Where this process sits in the job: torchrun's RANK/LOCAL_RANK/WORLD_SIZE (1 process without
    torchrun) and the device it trains on, read through contract.TrainEnv (the one environment reader)."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int

    @property
    def nnodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))

    @property
    def device(self) -> str:
        """The torch device: cuda:<local rank> (torchrun gives each rank on a host its own GPU) or cpu."""
        return f"cuda:{self.local_rank}" if has_cuda() else "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def placement() -> Placement:
    """This process's place, read afresh (the launcher and torchrun set the variables for children)."""
    settings = train_env()
    local = settings.local_world_size or settings.world_size
    return Placement(settings.rank, settings.local_rank, settings.world_size, local)


def world_size() -> int:
    return placement().world_size


def rank() -> int:
    return placement().rank


def local_rank() -> int:
    return placement().local_rank


def nnodes() -> int:
    return placement().nnodes


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------- DeepSpeed
def preset(name: str) -> dict:
    stage = 3 if name.startswith("zero3") else 2
    pin = has_cuda()  # pinned host memory needs a CUDA device
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        # model/ must hold real weights, not ZeRO shards
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config = {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_allow_untested_optimizer": True,
    }
    if name.endswith("_offload"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
        # ZeRO-Offload wants its own CPU Adam (DeepSpeed JIT-builds cpu_adam on first use);
        # "auto" takes lr/betas/eps/weight decay from the hyperparameters.
        config["optimizer"] = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                           "weight_decay": "auto"}}
    return config


def deepspeed_config(config, paths) -> dict | None:
    name = config.deepspeed
    if name == "none":
        return None
    if name in PRESETS:
        return preset(name)
    channel = paths.config_channel()
    candidate = _config_file(name, channel)
    try:
        loaded = json.loads(candidate.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        raise HyperparameterError(f"the DeepSpeed config is not valid JSON ({detail})",
                                  where=str(candidate), fix="fix the JSON file") from None
    if not isinstance(loaded, dict):
        raise HyperparameterError(f"the DeepSpeed config must be a JSON object ({{...}}), not a {type(loaded).__name__}",
                                  where=str(candidate), fix='write it as {"zero_optimization": {"stage": 2}, ...}')
    zero = loaded.get("zero_optimization") or {}
    if not isinstance(zero, dict):
        raise HyperparameterError(f"zero_optimization must be a JSON object, not a {type(zero).__name__}",
                                  where=f"{candidate}: zero_optimization", fix='write it as {"stage": 2, ...}')
    if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
        log.warning("%s: setting stage3_gather_16bit_weights_on_model_save=true so model/ holds real weights", candidate)
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return loaded


def _config_file(name: str, channel):
    """The named file inside the `config` channel; a name that leads outside it is refused."""
    from pathlib import Path

    fix = f"use one of {', '.join(PRESETS)}, or upload the JSON file in a `config` channel and give its name"
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise HyperparameterError(f"{name!r} points outside the `config` channel", where="hyperparameter deepspeed",
                                  fix=f"{fix} relative to the channel, e.g. ds_config.json")
    candidate = channel / name if channel else None
    if candidate is None or not candidate.is_file():
        raise HyperparameterError(f"{name!r} is neither a preset nor a file in the `config` channel",
                                  where="hyperparameter deepspeed", fix=fix)
    if not candidate.resolve().is_relative_to(channel.resolve()):  # a link to a file elsewhere
        raise HyperparameterError(f"{name!r} resolves to {candidate.resolve()}, outside the `config` channel",
                                  where="hyperparameter deepspeed", fix=f"{fix}: a regular file, not a link")
    return candidate


def zero_stage(ds_config: dict | None) -> int:
    if not ds_config:
        return 0
    return int((ds_config.get("zero_optimization") or {}).get("stage", 0))


def offloads(ds_config: dict | None) -> bool:
    zero = (ds_config or {}).get("zero_optimization") or {}
    return any((zero.get(k) or {}).get("device", "none") != "none" for k in ("offload_optimizer", "offload_param"))


@contextlib.contextmanager
def without_zero_init():
    """Load a model normally on one rank while a ZeRO-3 config is alive (transformers would
    otherwise partition it with zero.Init, a collective the other ranks never join)."""
    from transformers.integrations import deepspeed as hf_ds

    saved = hf_ds._hf_deepspeed_config_weak_ref  # the only handle transformers offers
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = saved


# ---------------------------------------------------------------- FSDP
def fsdp_settings(config, model_config) -> tuple[bool, dict] | None:
    """TrainingArguments (fsdp, fsdp_config) for enable_fsdp on GPUs; None (with a warning) on CPU."""
    if not config.enable_fsdp:
        return None
    if not has_cuda():
        log.warning("enable_fsdp=True needs GPUs: accelerate runs FSDP only on GPUs and falls back to DDP on "
                    "CPU, so this job trains with %s (see docs/scale.md)",
                    "DDP" if world_size() > 1 else "a single process")
        return None
    return True, fsdp_config(config, model_config)


def fsdp_config(config, model_config) -> dict:
    """FSDP2, full shard, wrapped by decoder layer, state dict gathered whole at save."""
    settings = {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "reshard_after_forward": True,  # full shard
        "state_dict_type": "FULL_STATE_DICT",  # gathered on rank 0, offloaded to CPU at save
        "cpu_ram_efficient_loading": False,
        "activation_checkpointing": bool(config.gradient_checkpointing),
    }
    layers = decoder_layer_classes(model_config)
    if layers:
        settings["transformer_layer_cls_to_wrap"] = layers
    return settings


def decoder_layer_classes(model_config) -> list[str]:
    """The model class's _no_split_modules (e.g. LlamaDecoderLayer), read without building it."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING

    for mapping in (MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING):
        try:
            return list(getattr(mapping[type(model_config)], "_no_split_modules", None) or [])
        except KeyError:
            continue
    return []


def parallelism(config, ds_config) -> str:
    """What actually shards the model in this job, for the log and metrics.json."""
    if ds_config:
        return f"deepspeed zero{zero_stage(ds_config)}" + ("+offload" if offloads(ds_config) else "")
    if config.enable_fsdp and has_cuda():
        return "fsdp full_shard"
    kind = "ddp" if world_size() > 1 else "single process"
    return kind + (" (enable_fsdp ignored: no GPU)" if config.enable_fsdp else "")


# ---------------------------------------------------------------- collectives
def dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device():
    import torch
    import torch.distributed as dist

    if "nccl" in str(dist.get_backend()) and "gloo" not in str(dist.get_backend()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on at least one (a collective: all ranks must call it)."""
    if not dist_ready():
        return bool(flag)
    import torch
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def gather_objects(obj) -> list:
    if not dist_ready():
        return [obj]
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist_ready():
        import torch.distributed as dist

        dist.barrier()


def teardown(*, wait_for_peers: bool = True) -> None:
    """barrier + destroy_process_group: without it DeepSpeed ranks abort at exit now and then.
    After a failure skip the barrier: a dead peer would make it hang (NCCL) or fail (gloo)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait_for_peers:
        try:
            dist.barrier()
        except Exception:  # noqa: BLE001 - a peer may be gone; teardown must not mask the real error
            pass
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass
