import json

import pytest

from tuneforge.contract import Paths, archive_failure, write_failure
from tuneforge.errors import DataError, HyperparameterError, ResourceError, UserError
from tuneforge.job.launcher import discover_world


def test_paths_follow_base_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    paths = Paths.from_env()
    assert paths.hyperparameters_file == tmp_path / "input/config/hyperparameters.json"
    assert paths.failure_file == tmp_path / "output/failure"
    assert paths.checkpoint_dir == tmp_path / "checkpoints"
    assert paths.train_channel() is None
    (tmp_path / "input/data/training").mkdir(parents=True)
    assert paths.train_channel() == tmp_path / "input/data/training"
    (tmp_path / "input/data/training").rmdir()
    (tmp_path / "input/data/train").mkdir()
    assert paths.train_channel() == tmp_path / "input/data/train"


def test_both_training_channels_fail_naming_both(tmp_path):
    paths = Paths(tmp_path)
    (tmp_path / "input/data/train").mkdir(parents=True)
    (tmp_path / "input/data/training").mkdir()
    with pytest.raises(DataError) as err:
        paths.train_channel()
    first = str(err.value).splitlines()[0]
    assert first.startswith(f"{tmp_path / 'input/data'}: two training channels, `train` and `training`")
    assert "Fix: put all training data in one channel" in first


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


@pytest.mark.parametrize("text,kind", [("[]", "a list"), ('"epoch=3"', "a string"), ("5", "a number"),
                                       ("null", "null")])
def test_config_files_that_are_not_objects_name_the_file(tmp_path, text, kind):
    paths = Paths(tmp_path)
    paths.config_dir.mkdir(parents=True)
    for path, read, error in ((paths.hyperparameters_file, paths.read_hyperparameters, HyperparameterError),
                              (paths.resource_config_file, paths.read_resource_config, ResourceError)):
        path.write_text(text)
        with pytest.raises(error) as err:
            read()
        assert str(err.value).startswith(f"{path}: must be a JSON object, but it holds {kind}")
        assert "Fix: write the file as one JSON object" in str(err.value)
    paths.hyperparameters_file.write_text("")  # empty: no hyperparameters, as before
    assert paths.read_hyperparameters() == {}


def test_one_host_rendezvous_on_loopback_several_on_the_first_host(tmp_path, monkeypatch):
    """`algo-1` resolves only inside SageMaker: a one-host job must not wait on it."""
    for name in ("TUNEFORGE_MASTER_ADDR", "TUNEFORGE_NPROC_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TUNEFORGE_NPROC_PER_NODE", "2")
    paths = Paths(tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.resource_config_file.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    assert discover_world(paths).master_addr == "127.0.0.1"
    paths.resource_config_file.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-2", "algo-1"]}))
    world = discover_world(paths)
    assert (world.master_addr, world.node_rank, world.size) == ("algo-1", 1, 4)
    monkeypatch.setenv("TUNEFORGE_MASTER_ADDR", "10.0.0.5")
    assert discover_world(paths).master_addr == "10.0.0.5"
    paths.resource_config_file.write_text(json.dumps({"current_host": "algo-1", "hosts": "algo-1"}))
    with pytest.raises(UserError, match="`hosts` must be a list of host names"):
        discover_world(paths)


@pytest.mark.parametrize("blocked", ["output", "model", "checkpoints"])
def test_a_file_where_an_output_folder_belongs_is_named(tmp_path, blocked):
    """A regular file in the folder's place: not writable for root too."""
    paths = Paths(tmp_path)
    (tmp_path / blocked).write_text("keep me\n")
    with pytest.raises(ResourceError) as err:
        paths.ensure_output_dirs()
    assert str(err.value) == (f"{tmp_path / blocked}: the job cannot write its outputs here: {tmp_path / blocked} is "
                              f"a file, not a folder. Fix: move that file away so that {tmp_path / blocked} can be "
                              "a folder (or mount a writable folder there)")
    assert (tmp_path / blocked).read_text() == "keep me\n"


def test_unwritable_output_folder_is_named(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes through chmod; the file-in-place test covers root")
    paths = Paths(tmp_path)
    paths.model_dir.mkdir()
    paths.model_dir.chmod(0o555)
    try:
        with pytest.raises(ResourceError, match=r"model: the job cannot write its outputs here: cannot be written"):
            paths.ensure_output_dirs()
    finally:
        paths.model_dir.chmod(0o755)


def test_failure_goes_to_stderr_when_output_is_not_a_folder(tmp_path, capsys):
    paths = Paths(tmp_path)
    (tmp_path / "output").write_text("not a folder\n")
    assert write_failure(paths, "ValueError: what went wrong. Fix: this") is False
    err = capsys.readouterr().err
    assert f"tuneforge: cannot write {paths.failure_file}" in err
    assert err.endswith("the failure was:\nValueError: what went wrong. Fix: this\n")
    assert (tmp_path / "output").read_text() == "not a folder\n"


def test_an_earlier_failure_is_moved_aside_once_per_run(tmp_path):
    paths = Paths(tmp_path)
    assert archive_failure(paths) is None
    assert write_failure(paths, "first run's reason")
    assert archive_failure(paths) == paths.previous_failure_file
    assert not paths.failure_file.exists()
    assert paths.previous_failure_file.read_text() == "first run's reason\n"
    # within the next run, the first failure written still wins
    assert write_failure(paths, "second run's reason") and not write_failure(paths, "a later rank's reason")
    assert paths.failure_file.read_text() == "second run's reason\n"


def test_training_environment_is_one_typed_object(monkeypatch, tmp_path):
    from tuneforge.contract import train_env

    env = train_env({})
    assert (env.rank, env.world_size, env.dns_timeout_s, env.allow_cpu_quantization) == (0, 1, 300.0, False)
    env = train_env({"RANK": "3", "TUNEFORGE_SKIP_PREFLIGHT": "yes", "TUNEFORGE_ALLOW_CPU_QUANTIZATION": '"1"',
                     "TUNEFORGE_MASTER_PORT": "", "UNRELATED": "x"})
    assert (env.rank, env.skip_preflight, env.allow_cpu_quantization, env.master_port) == (3, True, True, None)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    monkeypatch.setenv("TUNEFORGE_ALLOW_CPU_QUANTIZATION", "Off")
    assert train_env().base_dir == tmp_path and train_env().allow_cpu_quantization is False
    assert Paths.from_env().base == tmp_path and Paths.from_env("/elsewhere").base.as_posix() == "/elsewhere"


@pytest.mark.parametrize("name,value", [("RANK", "first"), ("TUNEFORGE_SKIP_PREFLIGHT", "maybe")])
def test_a_bad_environment_variable_is_named(name, value):
    from tuneforge.contract import train_env

    with pytest.raises(UserError) as err:
        train_env({name: value})
    assert str(err.value).startswith(f"environment variable {name}: {value!r} is not valid")
    assert f"Fix: set {name} to a valid value or unset it" in str(err.value)


def test_placement_is_read_from_torchrun_variables(monkeypatch):
    from tuneforge.job import distributed as D

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert (D.rank(), D.local_rank(), D.world_size(), D.nnodes(), D.placement().device) == (0, 0, 1, 1, "cpu")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert (D.rank(), D.local_rank(), D.world_size(), D.nnodes()) == (5, 1, 8, 1)  # LOCAL_WORLD_SIZE unset: 1 host
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert D.placement().nnodes == 2 and not D.placement().is_main


def test_launcher_settings_come_from_the_environment(monkeypatch):
    from tuneforge.job.launcher import SHUTDOWN_TIMEOUT_S, World, torchrun_command

    world = World(["algo-1"], "algo-1", 2, 29500, None)
    monkeypatch.delenv("TUNEFORGE_SHUTDOWN_TIMEOUT", raising=False)
    assert f"--shutdown_timeout={SHUTDOWN_TIMEOUT_S}" in torchrun_command(world, "tuneforge.recipes")
    monkeypatch.setenv("TUNEFORGE_SHUTDOWN_TIMEOUT", "7")
    assert "--shutdown_timeout=7" in torchrun_command(world, "tuneforge.recipes")
    monkeypatch.setenv("TUNEFORGE_SHUTDOWN_TIMEOUT", "soon")
    with pytest.raises(UserError, match="environment variable TUNEFORGE_SHUTDOWN_TIMEOUT"):
        torchrun_command(world, "tuneforge.recipes")


def test_the_launcher_hands_its_parsed_config_to_its_children(tmp_path, monkeypatch):
    """Children load the launcher's parsed values, equal to parsing again, and never read the file."""
    from tuneforge.config import TrainConfig, parse_hyperparameters
    from tuneforge.diffusion.config import DreamBoothConfig, parse_diffusion_hyperparameters
    from tuneforge.job import job_config
    from tuneforge.recipes import RECIPES

    paths = Paths(tmp_path)
    raw = {"epochCount": '"2"', "learning_rate": "1e-4", "target_modules": '["q_proj", "v_proj"]',
           "eval_min_score": "tickets=0.9", "packing": "True", "bits": "4", "sagemaker_program": '"x"'}
    for schema, parse, given in ((TrainConfig, parse_hyperparameters, raw),
                                 (DreamBoothConfig, parse_diffusion_hyperparameters, {"max_steps": "7"})):
        config = parse(given)
        with job_config.handed(paths, given, config) as env:
            monkeypatch.setenv(job_config.ENV, env[job_config.ENV])
            handed = job_config.handed_down()
            loaded = handed.config(schema)
        assert handed.raw == given and loaded == config and loaded.to_dict() == config.to_dict()
        assert loaded.model_fields_set == config.model_fields_set and type(loaded) is schema
        assert not list(paths.parsed_config_file("x").parent.glob("*.json"))  # removed when the children end
    paths.hyperparameters_file.parent.mkdir(parents=True)
    paths.hyperparameters_file.write_text('{"epoch": "oops"}')  # not read: the launcher's values win
    with job_config.handed(paths, raw, parse_hyperparameters(raw)) as env:
        monkeypatch.setenv(job_config.ENV, env[job_config.ENV])
        assert job_config.recipe_config(paths, RECIPES)[1].epoch == 2
    monkeypatch.delenv(job_config.ENV)
    with pytest.raises(HyperparameterError, match="epoch"):
        job_config.recipe_config(paths, RECIPES)  # no launcher: the file is read and parsed here
