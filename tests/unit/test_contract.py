import json

import pytest

from tuneforge.contract import Paths, write_failure
from tuneforge.errors import UserError


def test_paths_follow_base_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    paths = Paths.from_env()
    assert paths.hyperparameters_file == tmp_path / "input/config/hyperparameters.json"
    assert paths.failure_file == tmp_path / "output/failure"
    assert paths.checkpoint_dir == tmp_path / "checkpoints"
    assert paths.train_channel() is None
    (tmp_path / "input/data/training").mkdir(parents=True)
    assert paths.train_channel() == tmp_path / "input/data/training"
    (tmp_path / "input/data/train").mkdir()
    assert paths.train_channel() == tmp_path / "input/data/train"


def test_failure_file_is_never_overwritten(tmp_path):
    paths = Paths(tmp_path)
    assert write_failure(paths, "first reason") is True
    assert write_failure(paths, "second reason") is False
    assert paths.failure_file.read_text() == "first reason\n"


def test_bad_json_config_names_the_file(tmp_path):
    paths = Paths(tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.hyperparameters_file.write_text("{not json")
    with pytest.raises(UserError) as err:
        paths.read_hyperparameters()
    assert "hyperparameters.json" in str(err.value)
    paths.hyperparameters_file.write_text(json.dumps({"epoch": "1"}))
    assert paths.read_hyperparameters() == {"epoch": "1"}
