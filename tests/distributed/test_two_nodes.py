"""Two 'hosts' on one machine: two launchers with the same resourceconfig hosts and a different
current_host, each on its own /opt/ml tree (as on SageMaker), one process each, master on
127.0.0.1. Node 0 writes model/; both keep complete checkpoints of their own ranks."""

import json

import pytest

from tuneforge.train.checkpoints import complete_checkpoints

from .conftest import finish, free_port, job_env, reload_and_generate, start

HOSTS = ["algo-2", "algo-1"]  # unsorted on purpose: the launcher sorts, algo-1 is node 0


@pytest.mark.slow
def test_two_node_job_trains_and_saves_once(tmp_path, tiny):
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
                             "rouge_samples": "2", "max_output_length": "4", "per_device_train_batch_size": "4"})
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
    assert node0.metrics()["parallelism"] == "ddp" and node0.metrics()["distributed_type"] == "MULTI_CPU"
    assert node0.metrics()["steps"] == 4
    reload_and_generate(node0.model_dir)
    # each host keeps a full checkpoint (its own rank's RNG state) for its own disk
    for job, rank in ((node0, 0), (node1, 1)):
        final = complete_checkpoints(job.base / "checkpoints")[-1]
        assert final.name == "checkpoint-4"
        assert (final / f"rng_state_{rank}.pth").exists() and (final / "optimizer.pt").exists()
