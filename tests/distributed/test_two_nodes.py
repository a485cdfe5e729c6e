"""Two 'hosts' on one machine: two launchers with the same resourceconfig hosts and a different
current_host, each on its own /opt/ml tree (as on SageMaker), one process each, master on
127.0.0.1. Node 0 writes model/; both keep complete checkpoints of their own ranks. With DDP and
with ZeRO-3 (weights sharded across the hosts, checkpoints loaded back on both)."""

import json

import pytest

from tuneforge.train.checkpoints import complete_checkpoints

from .conftest import finish, free_port, job_env, reload_and_generate, start

HOSTS = ["algo-2", "algo-1"]  # unsorted on purpose: the launcher sorts, algo-1 is node 0


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "zero2", "zero3"])
def test_two_node_job_trains_and_saves_once(tmp_path, tiny, engine):
    from tests.conftest import Job

    jobs, processes = [], []
    port = free_port()
    for host in ("algo-1", "algo-2"):
        job = Job(tmp_path / host / "opt" / "ml")
        job.add_model(tiny("llama"))
        job.add_sample_data("instruction", n_train=32, n_val=8)
        (job.base / "input" / "config" / "resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": HOSTS, "network_interface_name": "lo"}))
        job.hyperparameters({"instruction_tuned": "True", "max_steps": "4", "checkpoint_steps": "2",
                             "rouge_samples": "2", "max_output_length": "4", "per_device_train_batch_size": "4",
                             **({"deepspeed": engine, "peft_type": "none"} if engine != "ddp" else {})})
        jobs.append(job)
    for job in jobs:
        processes.append(start(job, job_env(nproc=1, port=port)))
    results = [finish(p, j, timeout=300) for p, j in zip(processes, jobs)]
    for code, log in results:
        assert code == 0, log[-3000:]
    node0, node1 = jobs
    assert "--nnodes=2" in results[0][1] and "--node_rank=0" in results[0][1] and "--node_rank=1" in results[1][1]
    assert "node 1 of 2 finished; node 0 writes model/" in results[1][1]
    assert list(node1.model_dir.iterdir()) == [] and not node1.failure.exists()
    metrics = node0.metrics()
    assert metrics["steps"] == 4
    if engine == "ddp":
        assert metrics["parallelism"] == "ddp" and metrics["distributed_type"] == "MULTI_CPU"
    else:  # optimizer state (and with ZeRO-3 the weights) sharded across the two hosts
        assert metrics["parallelism"] == f"deepspeed {engine}" and metrics["distributed_type"] == "DEEPSPEED"
        assert "rougeL" in metrics
    reload_and_generate(node0.model_dir)
    # each host keeps a full checkpoint (its own rank's RNG state and shards) for its own disk
    for job, rank in ((node0, 0), (node1, 1)):
        final = complete_checkpoints(job.base / "checkpoints")[-1]
        assert final.name == "checkpoint-4" and (final / f"rng_state_{rank}.pth").exists()
        if engine == "ddp":
            assert (final / "optimizer.pt").exists()
        else:
            # DeepSpeed writes `latest` (and ZeRO-2's model states) on global rank 0 only; each host
            # needs its own to load a checkpoint (load_best_model_at_end loaded checkpoint-4 on both)
            assert (final / "latest").read_text() == "global_step4"
            shards = sorted(p.name for p in (final / "global_step4").iterdir())
            if engine == "zero2":
                assert shards == ["mp_rank_00_model_states.pt", f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"]
            else:
                assert shards == [f"zero_pp_rank_{rank}_mp_rank_00_{kind}_states.pt" for kind in ("model", "optim")]
