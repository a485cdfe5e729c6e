"""What a DreamBooth job records in metrics.json for its report beyond the losses: the data, what
was trained and where, how many images it trained on and how fast, and seconds per phase (the
keys the language-model jobs use where the fact is the same: data, job, parameters, epochs,
phases)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from . import PIPELINE_INDEX

DATA_FORMAT = "DreamBooth images"


class PhaseClock:
    """Seconds per phase of the job: each mark closes the phase that ran since the last one."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def mark(self, name: str) -> float:
        now = time.monotonic()
        spent = now - self._last
        self.seconds[name] = round(self.seconds.get(name, 0.0) + spent, 2)
        self._last = now
        return spent


def data_facts(data, class_images: int, generated: int, resolution: int, config) -> dict:
    """The training channel as the job used it."""
    facts = {"format": DATA_FORMAT, "instance_prompt": data.instance_prompt, "instance_images": len(data.instance_files),
             "resolution": resolution, "center_crop": config.center_crop,
             "files": [p.name for p in data.instance_files][:20], "with_prior_preservation": config.with_prior_preservation}
    if config.with_prior_preservation:
        facts.update(class_prompt=data.class_prompt, class_images=class_images,
                     class_images_given=min(len(data.class_files), class_images), class_images_generated=generated)
    return facts


def examples_per_step(examples: int, batch_size: int, accumulation: int) -> list[int]:
    """Instance examples in each optimizer step of one epoch (the last batch and group may be short)."""
    batches = [min(batch_size, examples - start) for start in range(0, examples, batch_size)]
    return [sum(batches[i:i + accumulation]) for i in range(0, len(batches), accumulation)]


def images_trained(steps: list[int], examples: int, config, prior: bool) -> int:
    """Images the UNet trained on in these (1-based) optimizer steps of epochs `examples` long; with
    prior preservation every instance image comes with a class image."""
    per_step = examples_per_step(examples, config.batch_size, config.gradient_accumulation_steps)
    total = sum(per_step[(step - 1) % len(per_step)] for step in steps)
    return total * (2 if prior else 1)


def parameters(parts, trainable: int) -> dict:
    total = sum(p.numel() for module in (parts.unet, parts.vae, parts.text_encoder) for p in module.parameters())
    return {"total": total, "trainable": trainable}


def job_facts(job) -> dict:
    """What was trained, how and where (the report's "What was trained")."""
    from ..report.jobfacts import hardware

    cfg = job.config
    parts = "UNet and text encoder" if cfg.train_text_encoder else "UNet"
    method = (f"DreamBooth, LoRA on the {parts} (r={cfg.lora_r}, alpha={cfg.lora_alpha}; merged into the saved "
              f"pipeline)" if cfg.use_lora else f"DreamBooth, full fine-tuning of the {parts}")
    autocast = job.autocast()
    precision = "bf16 autocast" if getattr(autocast, "fast_dtype", None) is not None else "fp32"
    return {"base_model": pipeline_name(job.base_dir), "base_model_path": str(job.base_dir), "family": "stable-diffusion",
            "architecture": type(job.parts.unet).__name__, "method": method, "precision": precision,
            "hardware": hardware(), "prediction_type": job.parts.noise_scheduler.config.prediction_type}


def pipeline_name(folder: Path) -> str:
    """The base pipeline's name: what an archive's unpacking recorded, else the hub id that
    model_index.json keeps (stabilityai/stable-diffusion-2-1-base), else the folder's name."""
    from ..model_folder import SOURCE_NAME_FILE, model_name

    if (folder / SOURCE_NAME_FILE).is_file():
        return model_name(folder)
    try:
        recorded = json.loads((folder / PIPELINE_INDEX).read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        recorded = None
    is_hub_id = isinstance(recorded, str) and recorded.count("/") == 1 and not recorded.startswith((".", "/"))
    return recorded if is_hub_id else folder.name


def epochs_done(steps: int, steps_per_epoch: int) -> float:
    return round(steps / max(steps_per_epoch, 1), 3)


def per_second(count: float, seconds: float) -> float | None:
    return round(count / seconds, 3) if seconds > 0 and math.isfinite(seconds) else None


TRACKED_FINALS = ("initial_loss", "final_loss", "train_loss", "fid_score_before", "fid_score",
                  "train_images_per_second", "train_runtime_s")


def tracker_finals(results: dict) -> dict[str, float]:
    """The job's final numbers as trackers name them: final/final_loss, final/fid_score, ..."""
    values = {f"final/{key}": results.get(key) for key in TRACKED_FINALS}
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
