"""Atomic checkpoints (manifest + rename), what counts as complete, rotation; failure-file
root cause; world discovery. Pure file and config logic, no training."""

import json
import os
import subprocess

import pytest

from tuneforge.contract import Paths
from tuneforge.job import ranks
from tuneforge.job.checkpoints import MARKER, commit, complete_checkpoints, latest_checkpoint, rotate, staging_dir
from tuneforge.job.launcher import discover_world, torchrun_command


def _staged(staging, step, files=None):
    folder = staging / f"checkpoint-{step}"
    (folder / "global_step").mkdir(parents=True)
    for name, text in (files or {"model.safetensors": "w" * 10, "optimizer.pt": "o" * 5,
                                 "global_step/shard.pt": "s" * 3}).items():
        (folder / name).write_text(text)
    return folder


def test_commit_writes_a_manifest_and_renames(tmp_path):
    paths = Paths(tmp_path)
    staging = staging_dir(paths)
    assert staging.parent == tmp_path and os.stat(staging).st_dev == os.stat(paths.checkpoint_dir).st_dev
    final = commit(_staged(staging, 5), paths.checkpoint_dir)
    assert final == paths.checkpoint_dir / "checkpoint-5" and not (staging / "checkpoint-5").exists()
    manifest = json.loads((final / MARKER).read_text())
    assert manifest["step"] == 5 and manifest["files"]["global_step/shard.pt"] == 3
    assert latest_checkpoint(paths.checkpoint_dir) == final


def test_incomplete_checkpoints_are_ignored(tmp_path):
    paths = Paths(tmp_path)
    staging = staging_dir(paths)
    good = commit(_staged(staging, 10), paths.checkpoint_dir)
    unmarked = paths.checkpoint_dir / "checkpoint-30"  # killed before the manifest: no marker
    unmarked.mkdir()
    (unmarked / "trainer_state.json").write_text("{}")
    truncated = commit(_staged(staging, 20), paths.checkpoint_dir)
    (truncated / "optimizer.pt").write_text("o")  # restored from S3 half-way: wrong size
    missing = commit(_staged(staging, 25), paths.checkpoint_dir)
    (missing / "global_step" / "shard.pt").unlink()
    assert complete_checkpoints(paths.checkpoint_dir) == [good]
    assert latest_checkpoint(tmp_path / "nowhere") is None


def test_rotation_keeps_the_newest_and_the_best_and_drops_leftovers(tmp_path):
    paths = Paths(tmp_path)
    staging = staging_dir(paths)
    done = [commit(_staged(staging, step), paths.checkpoint_dir) for step in (2, 4, 6, 8)]
    leftover = paths.checkpoint_dir / "checkpoint-3"
    leftover.mkdir()
    newer_leftover = paths.checkpoint_dir / "checkpoint-9"
    newer_leftover.mkdir()
    removed = rotate(paths.checkpoint_dir, keep=2, protect=done[0])
    assert sorted(p.name for p in removed) == ["checkpoint-3", "checkpoint-4"]
    assert complete_checkpoints(paths.checkpoint_dir) == [done[0], done[2], done[3]]
    assert newer_leftover.exists()  # may still be in the making
    # a re-save of a step whose incomplete folder is still there replaces it
    final = commit(_staged(staging, 9), paths.checkpoint_dir)
    assert latest_checkpoint(paths.checkpoint_dir) == final


def _rank_error(paths, rank, text, mtime):
    ranks.write_rank_error(paths, rank, text)
    os.utime(ranks.error_file(paths, rank), (mtime, mtime))


def _torchrun(paths, *failures):
    ranks.failures_file(paths, 0).write_text(json.dumps({"failures": list(failures)}))


def test_root_cause_is_the_first_rank_that_failed_on_its_own(tmp_path):
    paths = Paths(tmp_path)
    ranks.clear(paths)
    # rank 2 raised first; rank 0's collective then broke; rank 1 was torn down by torchrun
    _rank_error(paths, 0, "RuntimeError: Connection closed by peer\ntrace0", 1000.5)
    _rank_error(paths, 2, "ValueError: bad batch\ntrace2", 1000.1)
    _torchrun(paths, {"rank": 0, "exitcode": 1, "timestamp": 1000}, {"rank": 2, "exitcode": 1, "timestamp": 1000},
              {"rank": 1, "exitcode": 143, "timestamp": 1000})
    assert ranks.collect(paths, 1).splitlines()[:2] == ["ValueError: bad batch (rank 2)", "trace2"]


def test_root_cause_names_a_rank_killed_by_a_signal(tmp_path):
    paths = Paths(tmp_path)
    ranks.clear(paths)
    _rank_error(paths, 0, "RuntimeError: Connection reset by peer\n", 1000.9)
    _torchrun(paths, {"rank": 3, "exitcode": -9, "timestamp": 1000}, {"rank": 0, "exitcode": 1, "timestamp": 1000})
    first = ranks.collect(paths, 1).splitlines()[0]
    assert first.startswith("rank 3 was killed by signal SIGKILL (9) (the kernel's out-of-memory killer")
    _torchrun(paths, {"rank": 1, "exitcode": -11, "timestamp": 1000})
    assert "rank 1 was killed by signal SIGSEGV (11)" in ranks.collect(paths, 1)


def test_no_rank_information_still_gives_a_sentence(tmp_path):
    paths = Paths(tmp_path)
    ranks.clear(paths)
    assert ranks.collect(paths, 7) == "a training process exited with code 7 and left no error (see the log)\n"
    assert ranks.collect(paths, 143, stopping=True).startswith("stopped by SIGTERM before the ranks could save")


def test_world_from_resourceconfig(tmp_path, monkeypatch):
    for name in ("TUNEFORGE_NPROC_PER_NODE", "TUNEFORGE_MASTER_ADDR", "TUNEFORGE_MASTER_PORT",
                 "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        monkeypatch.setenv(name, "")  # so that monkeypatch restores the original (absent) value
        monkeypatch.delenv(name)
    paths = Paths(tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.resource_config_file.write_text(json.dumps(
        {"current_host": "algo-2", "hosts": ["algo-3", "algo-1", "algo-2"], "network_interface_name": "eth7"}))
    monkeypatch.setenv("TUNEFORGE_NPROC_PER_NODE", "4")
    world = discover_world(paths)
    assert (world.hosts, world.node_rank, world.nnodes, world.size) == (["algo-1", "algo-2", "algo-3"], 1, 3, 12)
    assert world.master_addr == "algo-1" and world.master_port == 7777
    assert os.environ["NCCL_SOCKET_IFNAME"] == "eth7"
    command = torchrun_command(world, "tuneforge.recipes")
    for arg in ("--nnodes=3", "--nproc_per_node=4", "--node_rank=1", "--master_addr=algo-1", "--master_port=7777",
                "--max_restarts=0"):
        assert arg in command
    assert command[-2:] == ["-m", "tuneforge.recipes"]
    monkeypatch.setenv("TUNEFORGE_MASTER_ADDR", "127.0.0.1")
    assert discover_world(paths).master_addr == "127.0.0.1"
    paths.resource_config_file.write_text(json.dumps({"current_host": "algo-9", "hosts": ["algo-1"]}))
    with pytest.raises(Exception, match="current_host 'algo-9' is not among hosts"):
        discover_world(paths)


# ---------------------------------------------------------------- DeepSpeed config files
def _ds_config(tmp_path, name, text=None):
    from types import SimpleNamespace

    from tuneforge.job.distributed import deepspeed_config

    paths = Paths(tmp_path)
    channel = paths.data_dir / "config"
    channel.mkdir(parents=True, exist_ok=True)
    if text is not None:
        (channel / "ds.json").write_text(text)
    return deepspeed_config(SimpleNamespace(deepspeed=name), paths)


@pytest.mark.parametrize("text, expected", [
    ("[1, 2]", "the DeepSpeed config must be a JSON object ({...}), not a list"),
    ('"zero2"', "the DeepSpeed config must be a JSON object ({...}), not a str"),
    ('{"zero_optimization": [2]}', "zero_optimization must be a JSON object, not a list"),
])
def test_deepspeed_file_that_is_not_an_object_is_a_hyperparameter_error(tmp_path, text, expected):
    from tuneforge.errors import HyperparameterError

    with pytest.raises(HyperparameterError) as caught:
        _ds_config(tmp_path, "ds.json", text)
    assert expected in str(caught.value) and str(tmp_path / "input" / "data" / "config" / "ds.json") in str(caught.value)
    assert "Fix: write it as" in str(caught.value)


def test_deepspeed_file_outside_the_config_channel_is_refused(tmp_path):
    from tuneforge.errors import HyperparameterError

    secret = tmp_path / "outside.json"
    secret.write_text('{"zero_optimization": {"stage": 2}}')
    for name in ("../../../outside.json", str(secret)):
        with pytest.raises(HyperparameterError) as caught:
            _ds_config(tmp_path, name, "{}")
        assert str(caught.value).startswith(f"hyperparameter deepspeed: {name!r} points outside the `config` channel")
    link = tmp_path / "input" / "data" / "config" / "link.json"
    link.symlink_to(secret)
    with pytest.raises(HyperparameterError, match="outside the `config` channel"):
        _ds_config(tmp_path, "link.json")
    # a file in a sub-folder of the channel is fine
    (tmp_path / "input" / "data" / "config" / "sub").mkdir()
    (tmp_path / "input" / "data" / "config" / "sub" / "z.json").write_text('{"zero_optimization": {"stage": 2}}')
    assert _ds_config(tmp_path, "sub/z.json")["zero_optimization"]["stage"] == 2


# ---------------------------------------------------------------- checkpoints may not hold code
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    import torch
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    from tuneforge.job.resume import CheckpointError, check_loads_weights_only, weights_only_loads

    folder = tmp_path / "checkpoint-2"
    (folder / "global_step2").mkdir(parents=True)
    marker = tmp_path / "pwned"
    evil = folder / "global_step2" / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.ones(2)}, "x": _Payload(marker)}, evil)
    torch.save({"w": torch.ones(2)}, folder / "rng_state.pth")
    torch.save(_Payload(marker), folder / "training_args.bin")  # never loaded on resume: not scanned
    with pytest.raises(CheckpointError) as caught:
        check_loads_weights_only(folder)
    assert str(caught.value).startswith(f"checkpoint file {evil} holds code or objects that are not allowed in a "
                                        "checkpoint (posix.system); nothing was loaded from it. Fix: delete")
    # DeepSpeed's own loader (torch.load(..., weights_only=False)) is overridden inside the guard
    with weights_only_loads(), pytest.raises(Exception, match="Weights only load failed"):
        TorchCheckpointEngine().load(str(evil), map_location="cpu")
    assert not marker.exists()
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None  # restored after the block
    evil.unlink()
    check_loads_weights_only(folder)  # tensors and plain data only: fine


def test_deepspeed_checkpoint_classes_load_weights_only(tmp_path):
    """The plain classes DeepSpeed's ZeRO optimizer states hold load under the guard."""
    import torch
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    from tuneforge.job.resume import weights_only_loads

    path = tmp_path / "optim_states.pt"
    torch.save({"zero_stage": ZeroStageEnum.gradients, "loss_scaler": LossScaler(1.0),
                "param_slice_mappings": [{"w": fragment_address(numel=4, start=0)}]}, path)
    with weights_only_loads():
        loaded = torch.load(path, weights_only=False)
    assert loaded["zero_stage"] == ZeroStageEnum.gradients and loaded["param_slice_mappings"][0]["w"].numel == 4
    assert loaded["loss_scaler"].cur_scale == 1.0


# ---------------------------------------------------------------- model/: complete or nothing
def test_publish_swaps_the_model_and_a_failure_restores_the_previous_one(tmp_path):
    from tuneforge.job.artifacts import ModelWriter

    paths = Paths(tmp_path)
    paths.model_dir.mkdir(parents=True)
    (paths.model_dir / "adapter_model.safetensors").write_text("old adapter")
    (paths.model_dir / "tuneforge.json").write_text("old")
    writer = ModelWriter(paths)
    staging = writer.start()
    assert os.stat(staging).st_dev == os.stat(paths.model_dir).st_dev and paths.model_dir not in staging.parents
    (staging / "model.safetensors").write_text("new weights")
    (staging / "tuneforge.json").write_text("new")
    writer.publish()
    # nothing of the earlier model is left to mix with the new one; staging is gone
    assert sorted(p.name for p in paths.model_dir.iterdir()) == ["model.safetensors", "tuneforge.json"]
    assert not staging.parent.exists()

    writer = ModelWriter(paths)
    staging = writer.start()
    (staging / "model.safetensors").write_text("newer")
    (staging / "tuneforge.json").write_text("newer")
    # an immutable file cannot be renamed, even by root: the swap fails after model.safetensors moved in
    if subprocess.run(["chattr", "+i", str(staging / "tuneforge.json")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        with pytest.raises(PermissionError):
            writer.publish()
    finally:
        subprocess.run(["chattr", "-i", str(staging / "tuneforge.json")], check=True)
    assert {p.name: p.read_text() for p in paths.model_dir.iterdir()} == {"model.safetensors": "new weights",
                                                                          "tuneforge.json": "new"}


# ---------------------------------------------------------------- non-finite training
def test_a_non_finite_weight_is_named_before_anything_is_saved(tiny):
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.job.finite import NonFiniteError, check_finite

    model = AutoModelForCausalLM.from_pretrained(tiny("llama"))
    check_finite(model.state_dict().items())
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 5] = float("inf")
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError) as caught:
        check_finite(model.state_dict().items())
    assert str(caught.value).startswith("the trained model has non-finite weights: model.layers.1.mlp.down_proj.weight "
                                        "holds 2 of 8192 values that are NaN or inf; model/ was not written. Fix: ")


def test_a_non_finite_logged_loss_fails_naming_the_step():
    from types import SimpleNamespace

    from tuneforge.job.finite import NonFiniteError
    from tuneforge.llm.callbacks import FailOnNonFinite

    callback = FailOnNonFinite(learning_rate=0.5)
    state = SimpleNamespace(global_step=12)
    callback.on_log(None, state, None, logs={"loss": 2.5, "grad_norm": 1.0})  # finite: nothing happens
    with pytest.raises(NonFiniteError) as caught:
        callback.on_log(None, state, None, logs={"loss": float("nan"), "grad_norm": float("inf")})
    assert str(caught.value).startswith("training loss became nan at step 12 (loss=nan, grad_norm=inf); training "
                                        "stopped and no model was saved. Fix: lower learning_rate (now 0.5)")
    with pytest.raises(NonFiniteError, match="^gradient norm became inf at step 12"):
        callback.on_log(None, state, None, logs={"loss": 3.0, "grad_norm": float("inf")})
