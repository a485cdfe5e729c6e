"""Entry point of a training job: read the contract, decide the process layout, run, report.

`train` in the image is sagemaker-training's console script with
SAGEMAKER_TRAINING_MODULE=tuneforge.train.launcher:main; `tuneforge train` calls run() directly.
One process per device; several (torchrun) when resourceconfig.json and the devices say so.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..contract import Paths, write_failure
from ..errors import UserError

log = logging.getLogger("tuneforge")
DEFAULT_MASTER_PORT = 7777


class TrainingFailed(Exception):
    """Raised to sagemaker-training (which maps SystemExit to success) after output/failure is written."""


@dataclass
class World:
    hosts: list[str]
    current_host: str
    nproc_per_node: int
    master_port: int

    @property
    def nnodes(self) -> int:
        return len(self.hosts)

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def master_addr(self) -> str:
        return self.hosts[0]

    @property
    def size(self) -> int:
        return self.nnodes * self.nproc_per_node


def device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def discover_world(paths: Paths) -> World:
    resources = paths.read_resource_config()
    hosts = sorted(resources.get("hosts") or [resources.get("current_host") or "localhost"])
    current = resources.get("current_host") or hosts[0]
    if current not in hosts:
        raise UserError(f"current_host {current!r} is not among hosts {hosts}", where=str(paths.resource_config_file),
                        fix="list the current host in `hosts`")
    nproc = int(os.environ.get("TUNEFORGE_NPROC_PER_NODE") or max(1, device_count()))
    port = int(os.environ.get("TUNEFORGE_MASTER_PORT", DEFAULT_MASTER_PORT))
    if resources.get("network_interface_name"):
        os.environ.setdefault("NCCL_SOCKET_IFNAME", resources["network_interface_name"])
        os.environ.setdefault("GLOO_SOCKET_IFNAME", resources["network_interface_name"])
    return World(hosts, current, nproc, port)


def configure_logging() -> None:
    logging.basicConfig(level=os.environ.get("TUNEFORGE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("httpx", "urllib3", "DeepSpeed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def failure_text(exc: BaseException) -> str:
    """One actionable line first (it becomes FailureReason), details after."""
    if isinstance(exc, UserError):
        return f"{type(exc).__name__}: {exc}\n"
    tail = "".join(traceback.format_exception(exc))[-3000:]
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    hint = ""
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        hint = " Fix: lower per_device_train_batch_size or max_input_length, or use LoRA/QLoRA/ZeRO-3."
    return f"{type(exc).__name__}: {first}{hint}\n\n{tail}"


def run(base_dir: str | os.PathLike | None = None) -> int:
    """Run one training job against the /opt/ml tree; 0 only when model/ holds a model."""
    from ..config import parse_hyperparameters
    from .artifacts import model_files_present

    configure_logging()
    paths = Paths.from_env(base_dir)
    os.environ["SAGEMAKER_BASE_DIR"] = str(paths.base)
    try:
        paths.ensure_output_dirs()
        raw = paths.read_hyperparameters()
        config = parse_hyperparameters(raw)
        world = discover_world(paths)
        if world.size > 1 and "LOCAL_RANK" not in os.environ:
            code = launch_torchrun(world, paths, config)
            if code != 0:
                return code
        else:
            from .recipe import Recipe

            Recipe(paths, config, raw).run()
        if not model_files_present(paths.model_dir):
            raise RuntimeError(f"training finished but {paths.model_dir} holds no complete model")
        log.info("model written to %s", paths.model_dir)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the failure file
        if isinstance(exc, KeyboardInterrupt):
            raise
        log.error("training failed: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if not isinstance(exc, UserError):
            log.error("%s", "".join(traceback.format_exception(exc)))
        write_failure(paths, failure_text(exc))
        return 1


def launch_torchrun(world: World, paths: Paths, config) -> int:
    """Start this host's share of the world with torchrun; one failure file for the job."""
    from .worker import collect_rank_errors

    if config.enable_fsdp and device_count() == 0:
        log.warning("enable_fsdp needs GPUs: on CPU the processes fall back to DDP")
    command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={world.nnodes}",
               f"--nproc_per_node={world.nproc_per_node}", f"--node_rank={world.node_rank}",
               f"--master_addr={world.master_addr}", f"--master_port={world.master_port}",
               "-m", "tuneforge.train.worker"]
    log.info("launching %d processes on %d node(s): %s", world.size, world.nnodes, " ".join(command))
    code = subprocess.call(command, env=dict(os.environ, SAGEMAKER_BASE_DIR=str(paths.base)))
    if code != 0:
        message = collect_rank_errors(paths) or f"a training process exited with code {code}\n"
        write_failure(paths, message)
        return code or 1
    return 0


def main() -> None:
    """sagemaker-training's SAGEMAKER_TRAINING_MODULE entry: raise on failure, never sys.exit."""
    code = run()
    if code != 0:
        raise TrainingFailed(f"training failed with exit code {code}; see output/failure")
