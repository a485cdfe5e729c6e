"""Entry point of a training job: read the contract, decide the process layout, run, report.

The launcher knows no recipe: it is handed a `Recipes` table (tuneforge/recipes.py: the job kinds,
each with its detection, hyperparameters, channel checks and in-process run) and passes it down to
the processes it starts. `train` in the image is sagemaker-training's console script with
SAGEMAKER_TRAINING_MODULE=tuneforge.recipes:main; `tuneforge train` calls run(isolate=True).
One process per device; several (torchrun) when resourceconfig.json, the devices and the recipe
say so. Training runs in child processes that die with this one (PR_SET_PDEATHSIG), so that a kill
of the launcher frees the machine and port, and a child killed outright (the out-of-memory
killer's SIGKILL) is still reported in output/failure.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..contract import Paths, archive_failure, started_by_torchrun, train_env, write_failure
from ..errors import UserError
from . import job_config, ranks, stopping
from .process import _pdeathsig_setter, configure_logging, failure_text
from .stopping import Stopped

log = logging.getLogger("tuneforge")
DEFAULT_MASTER_PORT = 7777
LOOPBACK = "127.0.0.1"
# SageMaker sends SIGKILL 120 s after SIGTERM: leave the ranks most of that to save a checkpoint
SHUTDOWN_TIMEOUT_S = 100


@dataclass(frozen=True)
class RecipeEntry:
    """One kind of job, as the launcher runs it; the recipe's own modules are imported by its functions."""

    kind: str                                   # "language-model", "text-to-image": named in the handoff file
    detect: Callable[[Paths, dict], bool]       # (paths, raw hyperparameters): this job is of this kind
    parse: Callable[[dict], Any]                # raw hyperparameters -> the recipe's frozen config
    config_type: type                           # the config a child reads back from the launcher's handoff
    check: Callable[[Paths, Any], None]         # channels checked before any process starts
    run: Callable[[Paths, Any, dict], None]     # the recipe in this process (the only one, or one rank)
    output_present: Callable[[Path], bool]      # model/ holds what a finished job leaves
    output_name: str = "model"
    # (world, config) -> start torchrun; None: one process on the first host (the others have nothing to do)
    needs_ranks: Callable[[World, Any], bool] | None = None


@dataclass(frozen=True)
class Recipes:
    """The table of recipes handed to the launcher and, through `module`, to the processes it starts."""

    entries: tuple[RecipeEntry, ...]  # the first whose detect() holds; the last is the default
    module: str  # has run(base_dir, *, isolate, fresh) for the single child; `python -m module` runs a rank
    after_failure: Callable[[Path], None] = lambda base: None  # e.g. the run report, as far as the job got

    def pick(self, paths: Paths, raw: dict, kind: str | None = None) -> RecipeEntry:
        if kind is not None:
            return next(entry for entry in self.entries if entry.kind == kind)
        return next((entry for entry in self.entries[:-1] if entry.detect(paths, raw)), self.entries[-1])


class TrainingFailed(Exception):
    """Raised to sagemaker-training (which maps SystemExit to success) after output/failure is written."""


@dataclass
class World:
    hosts: list[str]
    current_host: str
    nproc_per_node: int
    master_port: int
    master_addr_override: str | None = None

    @property
    def nnodes(self) -> int:
        return len(self.hosts)

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def master_addr(self) -> str:
        """One host needs no name (resourceconfig's `algo-1` resolves only inside SageMaker or with
        docker's --hostname); several rendezvous at the first host."""
        if self.master_addr_override:
            return self.master_addr_override
        return LOOPBACK if self.nnodes == 1 else self.hosts[0]

    @property
    def size(self) -> int:
        return self.nnodes * self.nproc_per_node


def device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def discover_world(paths: Paths) -> World:
    """resourceconfig.json (sorted hosts, current host, network interface) + the GPUs of this host.

    Environment overrides, for tests and non-SageMaker clusters: TUNEFORGE_NPROC_PER_NODE
    (processes per host; CPU tests use 2), TUNEFORGE_MASTER_ADDR (e.g. 127.0.0.1 when several
    'hosts' share one machine), TUNEFORGE_MASTER_PORT (default 7777, as SageMaker's own launchers).
    """
    resources = paths.read_resource_config()
    listed = resources.get("hosts")
    if listed is not None and not (isinstance(listed, list) and all(isinstance(h, str) for h in listed)):
        raise UserError(f"`hosts` must be a list of host names, not {listed!r}", where=str(paths.resource_config_file),
                        fix='write it as e.g. "hosts": ["algo-1", "algo-2"]')
    hosts = sorted(listed or [resources.get("current_host") or "localhost"])
    current = resources.get("current_host") or hosts[0]
    if current not in hosts:
        raise UserError(f"current_host {current!r} is not among hosts {hosts}", where=str(paths.resource_config_file),
                        fix="list the current host in `hosts`")
    settings = train_env()
    nproc = settings.nproc_per_node or max(1, device_count())
    port = settings.master_port if settings.master_port is not None else DEFAULT_MASTER_PORT
    if resources.get("network_interface_name"):
        os.environ.setdefault("NCCL_SOCKET_IFNAME", resources["network_interface_name"])
        os.environ.setdefault("GLOO_SOCKET_IFNAME", resources["network_interface_name"])
    return World(hosts, current, nproc, port, settings.master_addr)


def wait_for_host(host: str, timeout: float | None = None) -> None:
    """SageMaker hosts' DNS names can resolve a little after the job starts: retry, then fail clearly."""
    import socket

    timeout = train_env().dns_timeout_s if timeout is None else timeout
    deadline = time.time() + timeout
    while True:
        try:
            socket.getaddrinfo(host, None)
            return
        except socket.gaierror as exc:
            if time.time() >= deadline:
                raise RuntimeError(f"the master host {host!r} did not resolve within {timeout:.0f} s ({exc}). "
                                   "Fix: check the hosts in resourceconfig.json and the cluster's DNS") from None
            time.sleep(2)


def run(base_dir: str | os.PathLike | None = None, *, recipes: Recipes, isolate: bool = False,
        fresh: bool = True) -> int:
    """Run one training job against the /opt/ml tree; 0 only when model/ holds a model.

    recipes: the job kinds this launcher can run (tuneforge/recipes.py's table).
    isolate: run a single-process job in a child process (the command-line entries do), so that a
    SIGKILL of training still ends in a failure file; otherwise in this process (tests, embedding).
    fresh: a new run, which moves an earlier run's output/failure aside (False in that child).
    """
    configure_logging()
    paths = Paths.from_env(base_dir)
    os.environ["SAGEMAKER_BASE_DIR"] = str(paths.base)
    try:
        if fresh:
            archive_previous_failure(paths)
        paths.ensure_output_dirs()
        handed = job_config.handed_down()  # set in the isolated child: the parent parsed the file
        raw = handed.raw if handed else paths.read_hyperparameters()
        entry = recipes.pick(paths, raw, handed.kind if handed else None)
        config = handed.config(entry.config_type) if handed else entry.parse(raw)  # bad values fail here
        entry.check(paths, config)  # e.g. two training channels fail here, before any process starts
        code = launch(paths, recipes, entry, config, raw, isolate=isolate)
        if code is not None:
            return code
        if not entry.output_present(paths.model_dir):
            raise RuntimeError(f"training finished but {paths.model_dir} holds no complete {entry.output_name}")
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the failure file
        if isinstance(exc, KeyboardInterrupt):
            raise
        log.error("training failed: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if not isinstance(exc, (UserError, Stopped)):
            log.error("%s", "".join(traceback.format_exception(exc)))
        write_failure(paths, failure_text(exc))
        recipes.after_failure(paths.base)  # as far as the job got; never raises
        return 143 if isinstance(exc, Stopped) else 1


def launch(paths: Paths, recipes: Recipes, entry: RecipeEntry, config, raw: dict, *, isolate: bool) -> int | None:
    """This host's part of the job: torchrun's ranks, one child, or this process. The exit code where
    the job ends here, None where model/ is now to be checked."""
    if entry.needs_ranks is None:
        if not is_first_host(paths):
            log.info("%s training runs on the first host only; this host has nothing to do", entry.kind)
            return 0
        world = None
    else:
        world = discover_world(paths)
    if world is not None and entry.needs_ranks(world, config) and not started_by_torchrun():
        code = launch_torchrun(world, paths, recipes, entry, config, raw)
        if code != 0:
            return code
        if world.node_rank != 0:
            log.info("node %d of %d finished; node 0 writes model/", world.node_rank, world.nnodes)
            return 0
    elif isolate:
        code = launch_single(paths, recipes, entry, raw, config)
        if code != 0:
            return code
        if not entry.output_present(paths.model_dir):
            raise RuntimeError(f"training finished but {paths.model_dir} holds no complete {entry.output_name}")
        return 0  # the child said where the model went
    else:
        run_in_process(paths, entry, config, raw)
    if world is not None and entry.output_present(paths.model_dir):
        log.info("model written to %s", paths.model_dir)
    return None


def is_first_host(paths: Paths) -> bool:
    resources = paths.read_resource_config()
    hosts = sorted(resources.get("hosts") or [])
    return not hosts or resources.get("current_host", hosts[0]) == hosts[0]


def run_in_process(paths: Paths, entry: RecipeEntry, config, raw: dict) -> None:
    """The recipe in this process, with SIGTERM handled as a checkpoint-and-stop request."""
    previous = stopping.install()
    try:
        entry.run(paths, config, raw)
    finally:
        stopping.restore(previous)


def archive_previous_failure(paths: Paths) -> None:
    """An earlier run's failure (or its "stopped by SIGTERM ... rerun to resume" note) is not this
    run's: move it to output/previous-failure.txt, so a run that succeeds leaves no failure file.
    Within this run, a failure file once written is never overwritten (write_failure)."""
    moved = archive_failure(paths)
    if moved is not None:
        first = moved.read_text(errors="replace").partition("\n")[0]
        log.info("an earlier run's failure file moved to %s: %s", moved, first[:200])


def torchrun_command(world: World, rank_module: str) -> list[str]:
    """torchrun (through rankrun) starting `python -m rank_module` on each rank: the recipes' module."""
    timeout = train_env().shutdown_timeout_s
    timeout = SHUTDOWN_TIMEOUT_S if timeout is None else timeout
    return [sys.executable, "-m", "tuneforge.job.rankrun", f"--nnodes={world.nnodes}",
            f"--nproc_per_node={world.nproc_per_node}", f"--node_rank={world.node_rank}",
            f"--master_addr={world.master_addr}", f"--master_port={world.master_port}",
            "--max_restarts=0", f"--shutdown_timeout={timeout}", "-m", rank_module]


def launch_torchrun(world: World, paths: Paths, recipes: Recipes, entry: RecipeEntry, config, raw: dict) -> int:
    """Start this host's share of the world with torchrun; one failure file for the job.

    SIGTERM here (SageMaker stop, spot interruption) writes the stop marker and goes on to
    torchrun, which passes it to every rank; the ranks save a checkpoint together and exit.
    """
    if world.nnodes > 1 and not world.master_addr_override:
        wait_for_host(world.master_addr)
    ranks.clear(paths)
    marker = stopping.stop_marker(paths)
    command = torchrun_command(world, recipes.module)
    log.info("launching %d processes on %d node(s), node rank %d: %s", world.size, world.nnodes, world.node_rank,
             " ".join(command))

    def before_forward(signum):
        log.warning("%s received: asking all ranks to checkpoint and stop", signal.Signals(signum).name)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(signal.Signals(signum).name + "\n")

    with job_config.handed(paths, raw, config, entry.kind) as parsed:
        env = dict(os.environ, SAGEMAKER_BASE_DIR=str(paths.base),
                   TUNEFORGE_RANK_FAILURES=str(ranks.failures_file(paths, world.node_rank)), **parsed)
        env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        code = supervise(command, env, before_forward)
    if code != 0:
        stopped = marker.exists()
        write_failure(paths, ranks.collect(paths, code, stopping=stopped))
        recipes.after_failure(paths.base)
        return 143 if stopped else (code if code > 0 else 1)
    return 0


# the child of launch_single: this same launcher, in-process, on the same tree, through the recipes' module
_SINGLE = "import sys; from {module} import run; sys.exit(run(sys.argv[1], fresh=False))"


def launch_single(paths: Paths, recipes: Recipes, entry: RecipeEntry, raw: dict, config) -> int:
    """One training process, as a child, on the `config` parsed here: it writes its own failure
    file; a signal that kills it outright (SIGKILL from the out-of-memory killer) is reported here.
    SIGTERM is forwarded to it (it checkpoints and stops)."""
    with job_config.handed(paths, raw, config, entry.kind) as parsed:
        command = [sys.executable, "-c", _SINGLE.format(module=recipes.module), str(paths.base)]
        code = supervise(command, dict(os.environ, **parsed))
    if code < 0:
        write_failure(paths, ranks.killed_line("the training process", -code) + "\n")
        recipes.after_failure(paths.base)
        return 128 - code
    return code


def supervise(command: list[str], env: dict, before_forward=None) -> int:
    """Run `command` as a child that is SIGKILLed if this process dies (a scheduler's hard kill must
    not leave training holding the GPUs and port 7777); SIGTERM is forwarded to it. Its exit code,
    negative for a signal."""
    process = subprocess.Popen(command, env=env, preexec_fn=_pdeathsig_setter())

    def forward(signum, frame):  # noqa: ARG001
        if before_forward is not None:
            before_forward(signum)
        if process.poll() is None:
            process.send_signal(signum)

    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, forward) if on_main else None
    try:
        return process.wait()
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


def main(recipes: Recipes) -> None:
    """sagemaker-training's SAGEMAKER_TRAINING_MODULE entry (through tuneforge.recipes:main): raise on
    failure, never sys.exit."""
    code = run(recipes=recipes, isolate=True)
    if code != 0:
        raise TrainingFailed(f"training failed with exit code {code}; see output/failure")
