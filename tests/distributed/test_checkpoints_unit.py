"""Atomic checkpoints (manifest + rename), what counts as complete, rotation; failure-file
root cause; world discovery. Pure file and config logic, no training."""

import json
import os

import pytest

from tuneforge.contract import Paths
from tuneforge.train import ranks
from tuneforge.train.checkpoints import MARKER, commit, complete_checkpoints, latest_checkpoint, rotate, staging_dir
from tuneforge.train.launcher import discover_world, torchrun_command


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
    command = torchrun_command(world)
    for arg in ("--nnodes=3", "--nproc_per_node=4", "--node_rank=1", "--master_addr=algo-1", "--master_port=7777",
                "--max_restarts=0"):
        assert arg in command
    assert command[-2:] == ["-m", "tuneforge.train.worker"]
    monkeypatch.setenv("TUNEFORGE_MASTER_ADDR", "127.0.0.1")
    assert discover_world(paths).master_addr == "127.0.0.1"
    paths.resource_config_file.write_text(json.dumps({"current_host": "algo-9", "hosts": ["algo-1"]}))
    with pytest.raises(Exception, match="current_host 'algo-9' is not among hosts"):
        discover_world(paths)
