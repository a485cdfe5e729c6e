"""A text-to-image training job, entered from the training launcher (train/launcher.py).

Like a language-model job it runs in a child process under `tuneforge train` (so a SIGKILL still
ends in a failure file), stops on SIGTERM with a checkpoint, and exits 0 only when model/ holds a
complete pipeline. It runs on one device of the first host: DreamBooth on a handful of images
needs no more.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..model_folder import METADATA_FILE
from . import PIPELINE_INDEX

log = logging.getLogger("tuneforge")


def pipeline_files_present(model_dir: Path) -> bool:
    """model_index.json, tuneforge.json and safetensors weights for unet, vae and text_encoder."""
    model_dir = Path(model_dir)
    parts = all(any((model_dir / name).glob("*.safetensors")) for name in ("unet", "vae", "text_encoder"))
    return (model_dir / PIPELINE_INDEX).is_file() and (model_dir / METADATA_FILE).is_file() and parts


def is_first_host(paths) -> bool:
    resources = paths.read_resource_config()
    hosts = sorted(resources.get("hosts") or [])
    return not hosts or resources.get("current_host", hosts[0]) == hosts[0]


def check_channels(paths, config) -> None:
    """What the settings need from the channels beyond the training data: with compute_fid, the
    Inception weights in the `fid` channel (ModelError naming the channel and the file)."""
    if config.compute_fid:
        from .fid import weights_file

        weights_file(paths)


def run_job(paths, raw: dict, *, isolate: bool, handed=None) -> int:
    """Train; 0 when model/ holds the pipeline. Errors propagate to the launcher's failure file.
    handed: the launcher's parsed config (train/job_config.py), in the isolated child."""
    from ..train import stopping
    from ..train.launcher import launch_single
    from .config import DreamBoothConfig, parse_diffusion_hyperparameters

    # bad hyperparameters fail before a process starts
    config = handed.config(DreamBoothConfig) if handed else parse_diffusion_hyperparameters(raw)
    check_channels(paths, config)
    if not is_first_host(paths):
        log.info("text-to-image training runs on the first host only; this host has nothing to do")
        return 0
    if isolate:
        code = launch_single(paths, raw, config)
        if code != 0:
            return code
    else:
        from .train import DreamBooth

        previous = stopping.install()
        try:
            DreamBooth(paths, config).run()
        finally:
            stopping.restore(previous)
    if not pipeline_files_present(paths.model_dir):
        raise RuntimeError(f"training finished but {paths.model_dir} holds no complete pipeline")
    return 0  # the training process logged "pipeline written to ..." once
