"""Resumable checkpoints in /opt/ml/checkpoints (never in /opt/ml/model).

A checkpoint folder counts as complete once trainer_state.json exists: the Trainer writes it
last, after weights, optimizer, scheduler and RNG state.
"""

from __future__ import annotations

import re
from pathlib import Path

COMPLETE_MARKER = "trainer_state.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_dir() and (m := _STEP.match(p.name)) and (p / COMPLETE_MARKER).exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    done = complete_checkpoints(folder)
    return done[-1] if done else None
