"""A text-to-image training job, as the job runtime runs it (job/launcher.py's RecipeEntry).

Like a language-model job it runs in a child process under `tuneforge train` (so a SIGKILL still
ends in a failure file), stops on SIGTERM with a checkpoint, and exits 0 only when model/ holds a
complete pipeline. It runs on one device of the first host: DreamBooth on a handful of images
needs no more.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..job.launcher import RecipeEntry
from ..model_folder import METADATA_FILE
from . import PIPELINE_INDEX

log = logging.getLogger("tuneforge")


def pipeline_files_present(model_dir: Path) -> bool:
    """model_index.json, tuneforge.json and safetensors weights for unet, vae and text_encoder."""
    model_dir = Path(model_dir)
    parts = all(any((model_dir / name).glob("*.safetensors")) for name in ("unet", "vae", "text_encoder"))
    return (model_dir / PIPELINE_INDEX).is_file() and (model_dir / METADATA_FILE).is_file() and parts


def check_channels(paths, config) -> None:
    """What the settings need from the channels beyond the training data: with compute_fid, the
    Inception weights in the `fid` channel (ModelError naming the channel and the file)."""
    if config.compute_fid:
        from .fid import weights_file

        weights_file(paths)


def parse(raw: dict):
    from .config import parse_diffusion_hyperparameters

    return parse_diffusion_hyperparameters(raw)  # bad hyperparameters fail before a process starts


def run(paths, config, raw: dict) -> None:  # noqa: ARG001
    from .train import DreamBooth

    DreamBooth(paths, config).run()  # it logs "pipeline written to ..." once


def entry() -> RecipeEntry:
    """One process on the first host (needs_ranks None): the launcher runs it there, isolated under
    `tuneforge train`, with SIGTERM as checkpoint-and-stop; 0 only when model/ holds the pipeline."""
    from . import is_text_to_image_job
    from .config import DreamBoothConfig

    return RecipeEntry(kind="text-to-image", detect=is_text_to_image_job, parse=parse, config_type=DreamBoothConfig,
                       check=check_channels, run=run, output_present=pipeline_files_present, output_name="pipeline")
