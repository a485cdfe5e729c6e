"""The base model as users hand it over: archives (bounded, checked, cleaned up) and broken folders
(each a ModelError naming the file and the fix, never a raw library error)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

from tuneforge.config import parse_hyperparameters
from tuneforge.errors import ModelError
from tuneforge.modeling import load_model, load_tokenizer, read_model_config

FAST = {"instruction_tuned": "True", "max_steps": "2", "per_device_train_batch_size": "2", "rouge_samples": "0",
        "evaluation_strategy": "no", "load_best_model_at_end": "False", "peft_type": "none"}


def _pack(folder: Path, archive: Path, extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
        for member in extra:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return archive


def _job_with_archive(job, tiny, extra=()) -> Path:
    channel = job.channel("model")
    archive = _pack(tiny("llama"), channel / "model.tar.gz", extra)
    job.add_sample_data("instruction", n_train=8, n_val=2)
    job.hyperparameters(FAST)
    return archive


def test_an_archived_base_trains_and_is_removed_afterwards(job, tiny):
    _job_with_archive(job, tiny)
    in_tmp = set(Path(tempfile.gettempdir()).glob("tuneforge*"))
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    assert set(Path(tempfile.gettempdir()).glob("tuneforge*")) <= in_tmp  # nothing unpacked on the root volume
    assert (job.model_dir / "model.safetensors").exists()
    extracted = job.base / ".tuneforge-base-model"
    assert not extracted.exists() or not any(extracted.iterdir())  # unpacked on the job's volume, then removed


def test_a_truncated_archive_names_the_file(job, tiny):
    archive = _job_with_archive(job, tiny)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert job.run_in_process() != 0
    first = job.failure_first_line()
    assert str(archive) in first and "truncated" in first and "Fix:" in first
    assert not any((job.base / ".tuneforge-base-model").glob("*/*"))


@pytest.mark.parametrize("kind", ["escape", "absolute", "symlink"])
def test_archive_members_that_leave_the_folder_are_refused(job, tiny, tmp_path, kind):
    member = tarfile.TarInfo({"escape": "../../../evil.txt", "absolute": str(tmp_path / "evil.txt"),
                              "symlink": "tokenizer_link"}[kind])
    if kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        member.size = 4
    archive = _job_with_archive(job, tiny, [member])
    assert job.run_in_process() != 0
    first = job.failure_first_line()
    assert str(archive) in first and repr(member.name) in first and "refused" in first
    assert not (tmp_path / "evil.txt").exists() and not (job.base.parent / "evil.txt").exists()


def test_archive_size_is_bounded(job, tiny, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_MAX_ARCHIVE_GB", "0.00001")  # about 10 KB
    _job_with_archive(job, tiny)
    assert job.run_in_process() != 0
    assert "over TUNEFORGE_MAX_ARCHIVE_GB=0.00001" in job.failure_first_line()


@pytest.fixture
def broken(tiny, tmp_path):
    def make(damage) -> Path:
        folder = tmp_path / "base"
        shutil.copytree(tiny("llama"), folder)
        damage(folder)
        return folder
    return make


CONFIG = parse_hyperparameters({})


def test_config_json_that_is_not_json(broken):
    folder = broken(lambda f: (f / "config.json").write_text('{"model_type": "llama",'))
    with pytest.raises(ModelError) as err:
        read_model_config(folder, CONFIG)
    assert str(folder / "config.json") in str(err.value) and "not valid JSON (line 1" in str(err.value)


def test_config_json_of_an_unknown_model_type(broken):
    folder = broken(lambda f: (f / "config.json").write_text(json.dumps({"model_type": "no-such-model"})))
    with pytest.raises(ModelError, match="cannot read the model config"):
        read_model_config(folder, CONFIG)


def test_a_folder_without_tokenizer_files(broken):
    def drop(folder):
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (folder / name).unlink(missing_ok=True)
    folder = broken(drop)
    with pytest.raises(ModelError) as err:
        load_tokenizer(folder, CONFIG)
    assert "no tokenizer files" in str(err.value) and "save_pretrained" in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_weights_that_are_not_safetensors(broken, damage):
    def spoil(folder):
        weights = folder / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"\x00garbage" * 64)
    folder = broken(spoil)
    with pytest.raises(ModelError) as err:
        load_model(folder, CONFIG)
    assert str(folder) in str(err.value) and "copy the weights again" in str(err.value)


def test_a_run_shorter_than_one_epoch_counts_only_the_tokens_it_saw(job, tiny):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=40, n_val=2)
    job.hyperparameters({**FAST, "max_steps": "1", "validation_split_ratio": "0"})
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    metrics = job.metrics()
    per_row_max = metrics["data"]["max_input_length"]
    assert 0 < metrics["train_tokens"] <= 2 * per_row_max  # one step of 2 rows, not the whole epoch
    assert metrics["train_tokens"] < metrics["data"]["train"]["tokens"]
