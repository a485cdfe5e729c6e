"""Text-to-image (Stable Diffusion) fine-tuning and serving on the same /opt/ml contract.

This module only reads files (no torch import), so the training launcher and the gunicorn master
can ask it which kind of job or model they hold.
"""

from __future__ import annotations

import json
from pathlib import Path

PIPELINE_INDEX = "model_index.json"
DATASET_INFO = "dataset_info.json"


def is_pipeline_dir(folder: Path | str | None) -> bool:
    """A diffusers pipeline folder (model_index.json at its top)."""
    return folder is not None and (Path(folder) / PIPELINE_INDEX).is_file()


def find_pipeline_root(folder: Path) -> Path | None:
    """The shallowest folder under `folder` holding model_index.json, or None."""
    folder = Path(folder)
    if is_pipeline_dir(folder):
        return folder
    found = sorted(folder.rglob(PIPELINE_INDEX), key=lambda p: len(p.parts)) if folder.is_dir() else []
    return found[0].parent if found else None


def is_text_to_image_job(paths, raw: dict) -> bool:
    """The training job is text-to-image when the training channel holds dataset_info.json (the
    DreamBooth layout) or the base model (model channel, else the model_id folder) is a pipeline."""
    try:
        channel = paths.train_channel()
    except Exception:  # noqa: BLE001 - two training channels: the LLM path reports it
        channel = None
    if channel is not None and (channel / DATASET_INFO).is_file():
        return True
    model = paths.model_channel()
    if model is None:
        model_id = raw.get("model_id")
        text = json.loads(model_id) if isinstance(model_id, str) and model_id.startswith('"') else model_id
        model = Path(text) if isinstance(text, str) and text.strip() and Path(text).is_dir() else None
    return model is not None and find_pipeline_root(model) is not None
