"""Unpack a base model shipped as one tar archive (model.tar.gz, as SageMaker model artifacts are);
the folder a GGUF base is converted into (gguf.py) is made and removed the same way.

Checked before anything is written: every member must be a plain file or folder that stays inside
the target (no absolute paths, `..`, links or devices), one member must be the file that marks a
model folder (config.json; model_index.json for a pipeline), and the unpacked size must fit the disk
with room to spare and stay under TUNEFORGE_MAX_ARCHIVE_GB when that is set. Each process unpacks
into a folder of its own (ranks never race on one tree); folders of processes that are gone are
removed first, and `cleanup()` removes this process's folder when the job ends.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from .contract import train_env
from .errors import ModelError

DISK_HEADROOM = 1 << 30  # leave 1 GiB free for checkpoints and the model the job writes
_extracted: list[Path] = []


def _member_problem(member: tarfile.TarInfo) -> str | None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        return "its path leaves the archive's folder"
    if member.issym() or member.islnk():
        return "it is a link"
    if not (member.isfile() or member.isdir()):
        return "it is not a regular file or folder"
    return None


def _check_members(archive: tarfile.TarFile, path: Path, target: Path, markers: tuple[str, ...] = ()) -> int:
    """Every member's header, read one by one (a gzip stream is decompressed to reach each, about
    2.5 s a GiB, but nothing is written): a running size over a bound fails at once."""
    total, members = 0, []
    limit_gb, free = train_env().max_archive_gb, shutil.disk_usage(target).free
    for member in archive:
        problem = _member_problem(member)
        if problem:
            raise ModelError(f"archive member {member.name!r} is refused: {problem}", where=str(path),
                             fix="pack the model folder's plain files only (tar -czf model.tar.gz -C folder .)")
        total += member.size
        members.append(member)
        _check_size(total, limit_gb, free, path, target)
    _check_markers(members, path, markers)
    return total


def _check_size(total: int, limit_gb: float | None, free: int, path: Path, target: Path) -> None:
    if limit_gb and total > limit_gb * 2**30:
        limit = f"{limit_gb:f}".rstrip("0").rstrip(".")  # as written: 0.00001, not 1e-05
        raise ModelError(f"the archive unpacks to {total / 2**30:.2f} GiB or more, over TUNEFORGE_MAX_ARCHIVE_GB="
                         f"{limit}", where=str(path), fix="raise TUNEFORGE_MAX_ARCHIVE_GB or ship a smaller model")
    if total + DISK_HEADROOM > free:
        raise ModelError(f"the archive unpacks to {total / 2**30:.2f} GiB or more but only {free / 2**30:.2f} GiB "
                         f"are free in {target} (1 GiB is kept free for the job's outputs)", where=str(path),
                         fix="give the job a larger volume (VolumeSizeInGB), or pass the model folder unpacked")


def _check_markers(members: list[tarfile.TarInfo], path: Path, markers: tuple[str, ...]) -> None:
    """Refuse an archive holding none of `markers` (by name, before unpacking: a 20 GiB archive of
    something else would otherwise be unpacked whole only to be refused afterwards)."""
    if not markers or any(m.isfile() and PurePosixPath(m.name).name in markers for m in members):
        return
    files = [m.name for m in members if m.isfile()]
    shown = ", ".join(repr(name) for name in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    raise ModelError(f"the archive holds no {' or '.join(markers)}, so it is not a model folder "
                     f"(its files: {shown or 'none'}); nothing was unpacked", where=str(path),
                     fix="pack the model folder itself (tar -czf model.tar.gz -C folder .)")


def _remove_stale(root: Path) -> None:
    for folder in root.glob("pid-*"):
        try:
            os.kill(int(folder.name[4:]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def process_folder(root: Path) -> Path:
    """A fresh root/pid-<this process>/ folder, removed by cleanup(); leftovers of processes
    that are gone are removed first."""
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root)
    target = root / f"pid-{os.getpid()}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    _extracted.append(target)
    return target


def _record_name(target: Path, archive: Path) -> None:
    """The unpacked model's name (model_folder.model_name) where its folder is the temporary one:
    the archive's, unless that is SageMaker's model.tar.gz, which names nothing."""
    from .model_folder import SOURCE_NAME_FILE, name_from_file

    name = name_from_file(archive)
    if (target / "config.json").exists() and name.lower() != "model":
        (target / SOURCE_NAME_FILE).write_text(name + "\n", encoding="utf-8")


def extract_model_archive(path: Path, root: Path, markers: tuple[str, ...] = ("config.json",)) -> Path:
    """Unpack `path` into root/pid-<this process>/ and return that folder; the archive must hold
    one of `markers` (a file name, in any folder)."""
    try:
        with tarfile.open(path) as archive:
            root.mkdir(parents=True, exist_ok=True)
            _check_members(archive, path, root, markers)
            target = process_folder(root)
            # the members are checked above; the "data" filter (where this Python has it) checks again
            archive.extractall(target, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        _record_name(target, path)
    except ModelError:
        cleanup()
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        cleanup()
        if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, FileNotFoundError):
            raise ModelError(f"unpacking the archive failed ({exc.strerror})", where=str(path),
                             fix="free disk space or give the job a larger volume") from None
        raise ModelError(f"the archive cannot be read ({exc.__class__.__name__}: {exc}): it is truncated or not a "
                         "tar/tar.gz file", where=str(path),
                         fix="upload the archive again, complete (tar -czf model.tar.gz -C folder .)") from None
    return target


def cleanup() -> None:
    """Remove what this process unpacked."""
    while _extracted:
        shutil.rmtree(_extracted.pop(), ignore_errors=True)
