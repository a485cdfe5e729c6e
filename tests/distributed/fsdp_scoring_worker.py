"""Run by torchrun (2 CPU processes, gloo) from test_evaluation_fsdp.py: the tiny model sharded
with FSDP2 (fully_shard per decoder layer and at the root, as accelerate wraps it for a job)
scores a tasks folder through llm/lockstep.py, every rank in lockstep; rank 0 writes the
scores as JSON to argv[3]."""

import json
import sys
from pathlib import Path

import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from tuneforge.evaluation.tasks import load_tasks
from tuneforge.serve.loader import load_model
from tuneforge.serve.settings import ServeSettings
from tuneforge.llm.lockstep import score_tasks, sharded_forward


def main(model_dir: str, tasks_dir: str, out: str) -> None:
    dist.init_process_group("gloo")
    loaded = load_model(ServeSettings(model_dir=Path(model_dir), dtype="float32"))
    for layer in loaded.model.model.layers:
        fully_shard(layer)
    fully_shard(loaded.model)
    shard = next(loaded.model.parameters())
    assert shard.to_local().numel() < shard.numel(), "the weights are not sharded"
    assert loaded.model._is_fsdp_managed_module  # fully_shard's mark: generate syncs the ranks
    results = {}

    def record(task, result):
        if result is not None:
            results[task.name] = {k: v for k, v in result.items() if k != "details"}

    with sharded_forward(loaded.model, gather_zero3=False):
        left = score_tasks(load_tasks(Path(tasks_dir)), loaded, lockstep=True, budget_s=600, max_new_tokens=16,
                           stop_requested=lambda: False, on_result=record)
    assert not left, left
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
