"""Resumable DreamBooth checkpoints in /opt/ml/checkpoints, with the language models' conventions.

A checkpoint is checkpoint-<step>/ holding the trainable weights (safetensors), the optimizer and
learning-rate schedule (tensors and plain data, loaded weights-only), the random generators and
the position in the data (state.json). It is staged, given a manifest and renamed into place by
job/checkpoints.py, so a half-written one is never resumed; one made by a run with other
settings (identity) is moved aside, as for language models.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..job import checkpoints as ckpt
from ..job.resume import supersede, check_loads_weights_only, differences

log = logging.getLogger(__name__)

WEIGHTS, OPTIMIZER, SCHEDULER, STATE = "trainable.safetensors", "optimizer.pt", "scheduler.pt", "state.json"


@dataclass
class Position:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch: int = 0  # batches of `epoch` done


def identity(config, base_dir: Path, data, class_count: int, resolution: int) -> dict:
    """What a checkpoint depends on: resuming it under other values would train something else."""
    digest = hashlib.sha256()
    for path in [*data.instance_files, *data.class_files]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(data.instance_prompt.encode())
    unet_config = base_dir / "unet" / "config.json"
    return {"method": f"lora r={config.lora_r}" if config.use_lora else "full",
            "train_text_encoder": config.train_text_encoder,
            "base_model": hashlib.sha256(unet_config.read_bytes()).hexdigest()[:16],
            "data": digest.hexdigest()[:16], "resolution": resolution, "batch_size": config.batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "prior_preservation": class_count if config.with_prior_preservation else 0}


def trainable(modules: dict) -> dict[str, torch.nn.Parameter]:
    """{"unet.<name>": parameter} for every parameter that trains, in a fixed order."""
    return {f"{prefix}.{name}": param for prefix, module in modules.items()
            for name, param in module.named_parameters() if param.requires_grad}


def save(paths, position: Position, modules: dict, optimizer, scheduler, generator, ident: dict, keep: int) -> Path:
    from safetensors.torch import save_file

    staging = ckpt.staging_dir(paths) / f"checkpoint-{position.step}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    weights = {name: param.detach().to("cpu").contiguous() for name, param in trainable(modules).items()}
    save_file(weights, str(staging / WEIGHTS))
    torch.save(optimizer.state_dict(), staging / OPTIMIZER)
    torch.save(scheduler.state_dict(), staging / SCHEDULER)
    save_file({"generator": generator.get_state(), "torch": torch.get_rng_state()}, str(staging / "rng.safetensors"))
    (staging / STATE).write_text(json.dumps(vars(position)))
    final = ckpt.commit(staging, paths.checkpoint_dir, ident)
    ckpt.rotate(paths.checkpoint_dir, keep)
    log.info("checkpoint saved: %s", final)
    return final


def find(paths, ident: dict) -> Path | None:
    """The newest complete checkpoint made with these settings; others are moved aside."""
    latest = ckpt.latest_checkpoint(paths.checkpoint_dir)
    if latest is None:
        return None
    recorded = ckpt.read_manifest(latest).get("identity") or {}
    reasons = differences(recorded, ident)
    if reasons:
        supersede(paths.checkpoint_dir, reasons)
        return None
    check_loads_weights_only(latest)
    return latest


def load(folder: Path, modules: dict, optimizer, scheduler, generator) -> Position:
    from safetensors.torch import load_file

    weights = load_file(str(folder / WEIGHTS))
    params = trainable(modules)
    if set(weights) != set(params):
        raise RuntimeError(f"{folder} does not match this run's trainable weights")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name].to(param.device))
    optimizer.load_state_dict(torch.load(folder / OPTIMIZER, map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / SCHEDULER, map_location="cpu", weights_only=True))
    rng = load_file(str(folder / "rng.safetensors"))
    generator.set_state(rng["generator"])
    torch.set_rng_state(rng["torch"])
    position = Position(**json.loads((folder / STATE).read_text()))
    log.info("resumed from %s (step %d, epoch %d)", folder, position.step, position.epoch)
    return position
