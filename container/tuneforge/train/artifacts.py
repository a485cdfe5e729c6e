"""Write model/: weights (merged, full, or adapter + base reference), tokenizer, generation config
and tuneforge.json, so that serving needs nothing else.

Everything is written to a staging folder first and moved into model/ only when complete, so a
failed job leaves model/ as it found it (SageMaker would otherwise upload half a model).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .. import __version__
from ..contract import METADATA_FILE

FORMAT_VERSION = 1


class ModelWriter:
    def __init__(self, paths):
        self.paths = paths
        self.staging = paths.base / ".tuneforge-staging" / "model"
        self.published: list[Path] = []

    def start(self) -> Path:
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        return self.staging

    def write_metadata(self, metadata: dict) -> None:
        metadata = {"format_version": FORMAT_VERSION, "tuneforge_version": __version__,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **metadata}
        (self.staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str) + "\n")

    def publish(self) -> list[Path]:
        """Move the staged files into model/ and drop the staging folder."""
        target = self.paths.model_dir
        target.mkdir(parents=True, exist_ok=True)
        for item in sorted(self.staging.iterdir()):
            destination = target / item.name
            if destination.is_dir():
                shutil.rmtree(destination)
            elif destination.exists():
                destination.unlink()
            shutil.move(str(item), destination)
            self.published.append(destination)
        shutil.rmtree(self.staging.parent, ignore_errors=True)
        return self.published

    def discard(self) -> None:
        """After a failure: remove the staging folder and anything this run already moved."""
        shutil.rmtree(self.staging.parent, ignore_errors=True)
        for path in self.published:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def model_files_present(model_dir: Path) -> bool:
    """Exit 0 only when these exist: weights (or an adapter), a config and our metadata."""
    model_dir = Path(model_dir)
    has_meta = (model_dir / METADATA_FILE).exists()
    full = (model_dir / "config.json").exists() and any(model_dir.glob("*.safetensors"))
    adapter = (model_dir / "adapter_config.json").exists() and (model_dir / "adapter_model.safetensors").exists()
    return has_meta and (full or adapter)
