"""One rank of a torchrun launch: run the recipe, leave this rank's error for the launcher."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..contract import Paths


def error_file(paths: Paths, rank: int) -> Path:
    return paths.output_dir / ".ranks" / f"rank-{rank}.error"


def collect_rank_errors(paths: Paths) -> str | None:
    """The first failing rank's message, for the single failure file."""
    folder = paths.output_dir / ".ranks"
    files = sorted(folder.glob("rank-*.error"), key=lambda p: int(p.stem.split("-")[1])) if folder.is_dir() else []
    if not files:
        return None
    first = files[0]
    text = first.read_text()
    lines = text.splitlines()
    head = f"{lines[0]} (rank {first.stem.split('-')[1]})\n" if lines else ""
    return head + "\n".join(lines[1:]) + "\n"


def main() -> int:
    from ..config import parse_hyperparameters
    from .launcher import configure_logging, failure_text
    from .recipe import Recipe

    configure_logging()
    paths = Paths.from_env()
    rank = int(os.environ.get("RANK", "0"))
    try:
        raw = paths.read_hyperparameters()
        Recipe(paths, parse_hyperparameters(raw), raw).run()
        return 0
    except BaseException as exc:  # noqa: BLE001
        target = error_file(paths, rank)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(failure_text(exc))
        raise
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - teardown must not mask the real error
                pass


if __name__ == "__main__":
    sys.exit(main())
