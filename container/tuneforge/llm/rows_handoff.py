"""The rows read once per node: the node's local main process reads and splits the channels, and
the node's other ranks take what they need from it (the format, the prompt, the file list, the
validation rows) instead of each holding a Python copy of every row's text.

The other ranks wait for a small JSON file before the process group exists: whether there is
validation data decides the TrainingArguments, and those start the group. The file is named after
this run's torchrun agent (its pid and start time), so a rerun never reads an earlier run's; if
the reading rank fails, torchrun stops the waiting ranks with it (the failure names the row).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from ..contract import train_env
from ..data.arrow import cache_folder
from ..data.formats import Example

log = logging.getLogger(__name__)

POLL_S = 0.2
PREFIX = "rows-"


def run_token() -> str | None:
    """This run's torchrun agent as `<pid>-<start time>`, where a node runs several ranks under
    tuneforge's launcher (rankrun.py sets TUNEFORGE_AGENT_PID); None otherwise (every rank reads)."""
    settings = train_env()
    pid = settings.agent_pid
    if not pid or (settings.local_world_size or 1) <= 1:
        return None
    try:  # field 22 of /proc/<pid>/stat, counted after the command name in parentheses
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{pid}-{started}"


def handoff_path(base: Path, token: str) -> Path:
    return cache_folder(base, f"{PREFIX}{token}.json")


def publish(path: Path, *, channel: Path, fmt: str, files: list, prompt: dict, validation_channel: bool,
            n_train: int, val_examples: list[Example] | None) -> None:
    """Write what the node's other ranks need (atomically), and drop earlier runs' files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f"{PREFIX}*.json"):
        if old != path:
            old.unlink(missing_ok=True)
    summary = {"channel": str(channel), "format": fmt, "files": files, "prompt": prompt,
               "validation_channel": validation_channel, "n_train": n_train,
               "val_examples": None if val_examples is None else [asdict(e) for e in val_examples]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary))
    os.replace(tmp, path)


def wait_for(path: Path) -> dict:
    """The node reader's summary, once it is written; validation rows as Examples."""
    start = last_note = time.time()
    while not path.exists():
        time.sleep(POLL_S)
        if time.time() - last_note > 60:
            log.info("waiting for the node's local main process to read the data (%.0f s)", time.time() - start)
            last_note = time.time()
    summary = json.loads(path.read_text())
    if summary["val_examples"] is not None:
        summary["val_examples"] = [Example(**row) for row in summary["val_examples"]]
    return summary
