"""Resumable checkpoints in /opt/ml/checkpoints (never in /opt/ml/model), written atomically.

The Trainer writes each checkpoint (weights or adapter, optimizer, scheduler, RNG of every rank,
trainer state with the data position, DeepSpeed shards) into a staging folder. When every rank
has finished writing, the node's writer adds a manifest (tuneforge-checkpoint.json: each file and
its size) and renames the folder into checkpoints/. A checkpoint counts only when its manifest
exists and every file it lists has its size, so one half-written (killed mid-save) or
half-restored (SageMaker copying S3 back in) is ignored. Checkpoints rotate to save_total_limit,
keeping the best one when load_best_model_at_end asks for it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import ResourceError, UserError
from .artifacts import is_disk_full
from .distributed import gather_objects

log = logging.getLogger(__name__)

MARKER = "tuneforge-checkpoint.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def step_of(folder: Path) -> int | None:
    match = _STEP.match(Path(folder).name)
    return int(match.group(1)) if match else None


def staging_dir(paths) -> Path:
    """A folder on the checkpoints' filesystem (rename is atomic only there) that SageMaker does
    not upload: beside /opt/ml/checkpoints when it shares a filesystem, else inside it."""
    paths.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    beside = paths.base / ".tuneforge-staging-checkpoints"
    beside.mkdir(parents=True, exist_ok=True)
    if os.stat(beside).st_dev == os.stat(paths.checkpoint_dir).st_dev:
        return beside
    beside.rmdir()
    return paths.checkpoint_dir / ".staging"


def is_complete(folder: Path) -> bool:
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    for name, size in (manifest.get("files") or {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def complete_checkpoints(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(step_of(p), p) for p in folder.iterdir() if p.is_dir() and step_of(p) is not None and is_complete(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    done = complete_checkpoints(folder)
    return done[-1] if done else None


def common_latest_checkpoint(folder: Path, usable: Callable[[Path], bool] | None = None) -> Path | None:
    """The newest checkpoint complete (and `usable`) on every rank's disk (a collective when
    distributed): on several nodes one may hold checkpoint-30 while another was killed before
    finishing it."""
    mine = [step_of(p) for p in complete_checkpoints(folder) if usable is None or usable(p)]
    everyone = gather_objects(mine)
    common = set(everyone[0]).intersection(*map(set, everyone[1:]))
    if not common:
        return None
    if max(common) != (mine[-1] if mine else None):
        log.warning("resuming from step %d, the newest checkpoint every node has (this node has %s)", max(common), mine)
    return Path(folder) / f"checkpoint-{max(common)}"


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def commit(staged: Path, target_dir: Path, identity: dict | None = None) -> Path:
    """Write the manifest (files and sizes, and what the run was made with), then rename the
    staged folder into target_dir (atomic on one filesystem)."""
    _tag_deepspeed_shards(staged)
    files = {str(p.relative_to(staged)): p.stat().st_size for p in sorted(staged.rglob("*")) if p.is_file()}
    manifest = {"step": step_of(staged), "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if identity:
        manifest["identity"] = identity
    tmp = staged / (MARKER + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, staged / MARKER)
    final = Path(target_dir) / staged.name
    if final.exists():  # an incomplete leftover of an earlier attempt at this step
        shutil.rmtree(final)
    os.rename(staged, final)
    return final


def _tag_deepspeed_shards(staged: Path) -> None:
    """DeepSpeed writes the `latest` file (which names the global_step folder to load) on global
    rank 0 only, so on every other host a checkpoint would not load. Each host writes its own."""
    steps = [p.name for p in staged.glob("global_step*") if p.is_dir()]
    if len(steps) == 1 and not (staged / "latest").exists():
        (staged / "latest").write_text(steps[0])


def rotate(folder: Path, keep: int, protect: Path | None = None) -> list[Path]:
    """Keep the newest `keep` complete checkpoints (and `protect`); drop older ones and leftovers."""
    done = complete_checkpoints(folder)
    if not done:
        return []
    keepers = set(done[-keep:])
    if protect is not None:
        keepers.add(Path(protect))
    newest = step_of(done[-1])
    removed = []
    for path in Path(folder).iterdir():
        step = step_of(path)
        if step is None or path in keepers or not path.is_dir():
            continue
        if path in done or step < newest:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def relocate(path: str | None, staging: Path, final: Path) -> str | None:
    if path and Path(path).parent == staging:
        return str(final / Path(path).name)
    return path


def _free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def disk_full_error(exc: BaseException, staged: Path, final_dir: Path, need_bytes: int,
                    keep: int) -> ResourceError | None:
    """The ResourceError for a checkpoint that could not be written for lack of disk (None for any
    other error). Its partial folder is removed: it has no manifest, so it never counted anyway,
    and the last complete checkpoint stays for resume."""
    text = str(exc)
    # torch.save reports a full disk only as "file write failed"
    short = "PytorchStreamWriter failed writing file" in text and _free_bytes(Path(staged)) < need_bytes
    if isinstance(exc, UserError) or not (is_disk_full(exc) or short):
        return None
    shutil.rmtree(staged, ignore_errors=True)
    free, kept = _free_bytes(Path(staged)), latest_checkpoint(final_dir)
    kept_text = f"{kept} (the last complete one) is kept for resume" if kept else "no checkpoint was complete yet"
    return ResourceError(
        f"no space left while writing {Path(staged).name} ({text.strip().splitlines()[0][:200]}): a "
        f"checkpoint takes about {_size(need_bytes)} and {_size(free)} are free there; the partial "
        f"checkpoint was removed and {kept_text}", where=str(final_dir),
        fix=f"give the job more disk (VolumeSizeInGB on SageMaker) or free space there: checkpoints need room for "
            f"save_total_limit={keep} of them plus the one being written")
