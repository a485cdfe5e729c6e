"""Two 'hosts' on one machine: two launchers with the same resourceconfig hosts and a different
current_host, each on its own /opt/ml tree (as on SageMaker), one process each, master on
127.0.0.1. Node 0 writes model/; both keep complete checkpoints of their own ranks, which each
can load (load_best_model_at_end, resume). With DDP, ZeRO-2 and ZeRO-3."""

import json
import signal

import pytest

from tuneforge.job.checkpoints import complete_checkpoints, latest_checkpoint

from .conftest import finish, free_port, job_env, reload_and_generate, start, wait_for

pytestmark = pytest.mark.slow

HOSTS = ["algo-2", "algo-1"]  # unsorted on purpose: the launcher sorts, algo-1 is node 0


def _two_hosts(tmp_path, tiny, hyperparameters: dict) -> list:
    from tests.conftest import Job

    jobs = []
    for host in ("algo-1", "algo-2"):
        job = Job(tmp_path / host / "opt" / "ml")
        job.add_model(tiny("llama"))
        job.add_sample_data("instruction", n_train=64, n_val=8)
        (job.base / "input" / "config" / "resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": HOSTS, "network_interface_name": "lo"}))
        job.hyperparameters({"instruction_tuned": "True", "per_device_train_batch_size": "4", **hyperparameters})
        jobs.append(job)
    return jobs


def _start_both(jobs) -> list:
    port = free_port()
    return [start(job, job_env(nproc=1, port=port)) for job in jobs]


def _engine(engine: str) -> dict:
    return {"deepspeed": engine, "peft_type": "none"} if engine != "ddp" else {}


@pytest.mark.parametrize("engine", ["ddp", "zero2", "zero3"])
def test_two_node_job_trains_and_saves_once(tmp_path, tiny, engine):
    jobs = _two_hosts(tmp_path, tiny, {"max_steps": "4", "checkpoint_steps": "2", "rouge_samples": "2",
                                       "max_output_length": "4", **_engine(engine)})
    results = [finish(p, j, timeout=300) for p, j in zip(_start_both(jobs), jobs)]
    for code, log in results:
        assert code == 0, log[-3000:]
    node0, node1 = jobs
    assert "--nnodes=2" in results[0][1] and "--node_rank=0" in results[0][1] and "--node_rank=1" in results[1][1]
    assert "node 1 of 2 finished; node 0 writes model/" in results[1][1]
    assert list(node1.model_dir.iterdir()) == [] and not node1.failure.exists()
    metrics = node0.metrics()
    assert metrics["steps"] == 4 and "rougeL" in metrics
    if engine == "ddp":
        assert metrics["parallelism"] == "ddp" and metrics["distributed_type"] == "MULTI_CPU"
    else:  # optimizer state (and with ZeRO-3 the weights) sharded across the two hosts
        assert metrics["parallelism"] == f"deepspeed {engine}" and metrics["distributed_type"] == "DEEPSPEED"
    reload_and_generate(node0.model_dir)
    # each host keeps a full checkpoint (its own rank's RNG state and shards) for its own disk
    for job, rank in ((node0, 0), (node1, 1)):
        final = complete_checkpoints(job.base / "checkpoints")[-1]
        assert final.name == "checkpoint-4" and (final / f"rng_state_{rank}.pth").exists()
        if engine == "ddp":
            assert (final / "optimizer.pt").exists() and (final / "adapter_model.safetensors").exists()
            continue
        # DeepSpeed writes `latest` (which names global_step4) on global rank 0 only; each host
        # needs its own to load a checkpoint
        assert (final / "latest").read_text() == "global_step4"
        shards = sorted(p.name for p in (final / "global_step4").iterdir())
        if engine == "zero2":
            assert shards == ["mp_rank_00_model_states.pt", f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"]
        else:
            assert shards == [f"zero_pp_rank_{rank}_mp_rank_00_{kind}_states.pt" for kind in ("model", "optim")]


@pytest.mark.parametrize("engine", ["ddp", "zero3"])
def test_both_hosts_stopped_by_sigterm_resume_together(tmp_path, tiny, engine):
    """A spot interruption of a two-host job: SageMaker sends SIGTERM to every host's container.
    60 steps leave ample room for the signal to land before training ends on a slow machine."""
    jobs = _two_hosts(tmp_path, tiny, {"max_steps": "60", "checkpoint_steps": "3", "rouge_samples": "0",
                                       "evaluation_strategy": "no", "learning_rate": "0.001", "peft_type": "none",
                                       **_engine(engine)})
    processes = _start_both(jobs)
    assert wait_for(lambda: all(latest_checkpoint(j.base / "checkpoints") for j in jobs), timeout=240, interval=0.05)
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process, job in zip(processes, jobs):
        code, log = finish(process, job, timeout=120)
        assert code == 143, log[-3000:]
        assert job.failure_first_line().startswith("stopped by SIGTERM at step")
    for process, job in zip(_start_both(jobs), jobs):
        code, log = finish(process, job, timeout=300)
        assert code == 0, log[-3000:]
        assert "resuming from" in log
    metrics = jobs[0].metrics()
    assert metrics["steps"] == 60 and metrics["resumed_from"]
    if engine == "ddp":  # transformers writes weights on global rank 0 only; tuneforge on each host
        assert all((latest_checkpoint(j.base / "checkpoints") / "model.safetensors").exists() for j in jobs)
    reload_and_generate(jobs[0].model_dir)
