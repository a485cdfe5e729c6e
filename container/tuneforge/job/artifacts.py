"""Write model/: weights (merged, full, or adapter + base reference), tokenizer, generation config
and tuneforge.json, so that serving needs nothing else.

model/ holds a complete model or nothing. Everything is written to a staging folder on model/'s
own filesystem first (beside model/ when the parent shares its filesystem, else a hidden folder
inside it, removed before the job ends), so a full disk fails while staging, never half-way
through model/. publish() then moves what model/ held aside and renames each staged file in
(os.replace: atomic, no data copied); on any failure discard() removes what this run put in
model/ and puts back what was there before.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..model_folder import ModelMetadata, is_complete

STAGING_NAME = ".tuneforge-staging"


def staging_root(model_dir: Path) -> Path:
    """A folder on model/'s filesystem (a rename is atomic and copies nothing only there)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    beside = model_dir.parent / f"{STAGING_NAME}-model"
    beside.mkdir(parents=True, exist_ok=True)
    if os.stat(beside).st_dev == os.stat(model_dir).st_dev:
        return beside
    beside.rmdir()  # model/ is a mount of its own
    return model_dir / STAGING_NAME


class ModelWriter:
    def __init__(self, paths):
        self.paths = paths
        self.root: Path | None = None
        self.published: list[Path] = []
        self.displaced: list[str] = []  # names of what model/ held before, kept in root/previous

    @property
    def staging(self) -> Path:
        if self.root is None:
            self.root = staging_root(self.paths.model_dir)
        return self.root / "model"

    def start(self) -> Path:
        shutil.rmtree(self.staging.parent, ignore_errors=True)
        self.staging.mkdir(parents=True)
        return self.staging

    def write_metadata(self, metadata: ModelMetadata | dict) -> None:
        """tuneforge.json into staging; a dict is checked against ModelMetadata's declared fields."""
        if isinstance(metadata, dict):
            metadata = ModelMetadata.from_values(metadata)
        metadata.write(self.staging)

    def publish(self) -> list[Path]:
        """Swap the staged model into model/ file by file, renames only; all or nothing."""
        target = self.paths.model_dir
        aside = self.root / "previous"
        aside.mkdir(exist_ok=True)
        try:
            for item in sorted(target.iterdir()):
                if item != self.root:
                    os.replace(item, aside / item.name)
                    self.displaced.append(item.name)
            for item in sorted(self.staging.iterdir()):
                destination = target / item.name
                os.replace(item, destination)
                self.published.append(destination)
        except BaseException:
            self.discard()
            raise
        shutil.rmtree(self.root, ignore_errors=True)  # what model/ held before, now replaced
        self.root, self.displaced = None, []
        return self.published

    def discard(self) -> None:
        """After a failure: remove what this run put in model/, restore what was there, drop staging."""
        for path in self.published:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.published = []
        if self.root is not None:
            for name in self.displaced:
                os.replace(self.root / "previous" / name, self.paths.model_dir / name)
            shutil.rmtree(self.root, ignore_errors=True)
        self.root, self.displaced = None, []


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC (no space), EDQUOT (quota) or EFBIG (file size limit), also as safetensors reports them."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    text = str(exc)
    return any(s in text for s in ("No space left on device", "StorageFull", "File too large", "Disk quota"))


def model_files_present(model_dir: Path) -> bool:
    """Exit 0 only when these exist: weights (or an adapter), a config and our metadata."""
    return is_complete(Path(model_dir))
