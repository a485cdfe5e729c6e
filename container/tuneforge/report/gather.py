"""Read what a job left behind, from wherever it is: an /opt/ml-shaped job folder, its output/data
folder, or the model.tar.gz / output.tar.gz archives SageMaker uploads (also a folder holding
them, as `aws s3 cp --recursive` of a job's output prefix leaves it).

Archives are read member by member, never unpacked: only plain files with the expected names are
read, and each has a size cap.
"""

from __future__ import annotations

import functools
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from ..contract import Paths
from ..errors import UserError
from ..metrics_file import MetricsFile, read_metrics

FILES = ("metrics.json", "samples.jsonl", "log_history.json", "image_grid.png", "tuneforge.json", "failure",
         "hyperparameters.json")
MAX_BYTES = 64 << 20
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class ReportInputError(UserError):
    """The path given to `tuneforge report` holds no job output."""


@dataclass
class JobOutput:
    source: Path
    label: str
    metrics: dict = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    failure: str | None = None
    metadata: dict | None = None  # model/tuneforge.json
    image_grid: bytes | None = None
    raw_hyperparameters: dict | None = None  # input/config/hyperparameters.json
    report_dir: Path | None = None  # where the report goes by default

    @functools.cached_property
    def recorded(self) -> MetricsFile:
        """metrics.json through its schema (metrics_file.py), or the summary model/tuneforge.json keeps
        (all a model.tar.gz holds)."""
        return read_metrics(self.metrics or dict((self.metadata or {}).get("metrics") or {}))

    @property
    def succeeded(self) -> bool:
        return self.failure is None and bool(self.metrics or self.metadata)


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def _read_archive(path: Path, found: dict[str, bytes]) -> None:
    """The wanted files of an archive, by file name; the shallowest member of a name wins."""
    try:
        with tarfile.open(path) as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name.count("/"))
            for member in members:
                name = Path(member.name).name
                if name in FILES and name not in found and member.size <= MAX_BYTES:
                    found[name] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ReportInputError(f"cannot read the archive: {exc}", where=str(path),
                               fix="pass the model.tar.gz or output.tar.gz the job uploaded, unchanged") from None


def _read_folder(folder: Path, found: dict[str, bytes], names=FILES) -> None:
    for name in names:
        path = folder / name
        if name not in found and path.is_file() and path.stat().st_size <= MAX_BYTES:
            found[name] = path.read_bytes()


def _collect(path: Path) -> tuple[dict[str, bytes], Path]:
    """The job's files and the folder its report goes to by default."""
    found: dict[str, bytes] = {}
    if _is_archive(path):
        _read_archive(path, found)
        return found, path.parent
    if not path.is_dir():
        raise ReportInputError("no such job folder or archive", where=str(path),
                               fix="pass a job folder (/opt/ml), its output/data folder, or model.tar.gz / output.tar.gz")
    tree = Paths(path)
    if tree.output_data_dir.is_dir():  # an /opt/ml tree
        _read_folder(tree.output_data_dir, found)
        _read_folder(tree.output_dir, found, ("failure",))
        _read_folder(tree.model_dir, found, ("tuneforge.json",))
        _read_folder(tree.config_dir, found, ("hyperparameters.json",))
        return found, tree.output_data_dir
    _read_folder(path, found)  # output/data itself
    if (path / "metrics.json").is_file() and path.parent.name == "output":
        job = Paths(path.parent.parent)
        _read_folder(job.output_dir, found, ("failure",))
        _read_folder(job.model_dir, found, ("tuneforge.json",))
    for folder in (path, path / "output"):  # a downloaded S3 output prefix
        for name in ("output.tar.gz", "model.tar.gz"):
            if (folder / name).is_file():
                _read_archive(folder / name, found)
    return found, path


def _json(found: dict[str, bytes], name: str, where: Path):
    if name not in found:
        return None
    try:
        return json.loads(found[name].decode("utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{name} is not valid JSON (line {exc.lineno}: {exc.msg})", where=f"{where}: {name}",
                               fix="rebuild the report from an unmodified job output") from None


def _jsonl(found: dict[str, bytes], name: str) -> list[dict]:
    rows = []
    for line in found.get(name, b"").decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a job that died while writing
        if isinstance(row, dict):
            rows.append(row)
    return rows


def load_job(path: str | Path, label: str | None = None) -> JobOutput:
    path = Path(path).resolve()
    found, report_dir = _collect(path)
    if not any(name in found for name in ("metrics.json", "tuneforge.json", "log_history.json", "failure")):
        raise ReportInputError("found no job output here (metrics.json, log_history.json, model/tuneforge.json or "
                               "output/failure)", where=str(path),
                               fix="pass a job folder (/opt/ml), its output/data folder, or model.tar.gz / output.tar.gz")
    history = _json(found, "log_history.json", path)
    return JobOutput(
        source=path, label=label or _default_label(path),
        metrics=_json(found, "metrics.json", path) or {}, samples=_jsonl(found, "samples.jsonl"),
        history=history if isinstance(history, list) else [],
        failure=found["failure"].decode("utf-8", errors="replace") if "failure" in found else None,
        metadata=_json(found, "tuneforge.json", path), image_grid=found.get("image_grid.png"),
        raw_hyperparameters=_json(found, "hyperparameters.json", path), report_dir=report_dir)


def _default_label(path: Path) -> str:
    """The job's name: the folder above opt/ml, output/data or output/, or the archive's folder."""
    parts = [p for p in path.parts if p not in ("/", "opt", "ml", "output", "data")]
    if _is_archive(path):
        parts = parts[:-1]
    return parts[-1] if parts else str(path)
