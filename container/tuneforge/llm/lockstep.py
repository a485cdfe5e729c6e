"""Using a model whose weights are spread over the job's processes (ZeRO-3, FSDP) for greedy
answers and task scores.

Each forward pass of such a model gathers a layer's shards from every rank (a collective), so
every rank runs the same passes in lockstep and rank 0 keeps the numbers; transformers' generate
keeps stepping until every rank is done (synced_gpus, on for ZeRO-3 and for FSDP2 modules, which
fully_shard marks). One case needs help: ZeRO-3 before training. zero.Init partitioned the
weights when the model was loaded, but DeepSpeed's engine, whose hooks gather them, only exists
once training starts; each module gathers its own parameters around its forward here instead, as
the engine would, so no rank holds more than one module's whole weights beyond its own shards.
"""

from __future__ import annotations

import contextlib
import time


@contextlib.contextmanager
def sharded_forward(model, *, gather_zero3: bool):
    """The model ready for lockstep forward passes (see the module docstring); undone on exit."""
    with _gathered_per_module(model) if gather_zero3 else contextlib.nullcontext():
        yield model


@contextlib.contextmanager
def _gathered_per_module(model):
    """ZeRO-3-partitioned parameters gathered module by module around each forward."""
    import deepspeed

    open_gathers: dict[int, list] = {}  # module id -> entered GatheredParameters, innermost last

    def gather(module, _args):
        own = [p for p in module.parameters(recurse=False) if hasattr(p, "ds_id")]
        if own:
            context = deepspeed.zero.GatheredParameters(own)
            context.__enter__()
            open_gathers.setdefault(id(module), []).append(context)

    def release(module, _args, _output):
        contexts = open_gathers.get(id(module))
        if contexts:
            contexts.pop().__exit__(None, None, None)

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(gather))
        handles.append(module.register_forward_hook(release, always_call=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def score_tasks(tasks, view, *, lockstep: bool, budget_s: float, max_new_tokens: int, stop_requested,
                on_result) -> list[str]:
    """Each task scored in order (evaluation/scoring.py), `on_result(task, result)` called on every
    rank (other ranks than a node's first get None from lm-eval's tasks). Under lockstep all ranks
    agree on stopping before each task, or the others would wait on its gathers forever. Returns the
    names left unscored because the budget ran out (empty when all ran or a stop was asked)."""
    from ..evaluation.scoring import score_task
    from ..job import distributed

    end = time.monotonic() + budget_s
    for index, task in enumerate(tasks):
        stop, late = stop_requested(), time.monotonic() >= end
        if lockstep:
            stop, late = distributed.any_rank(stop), distributed.any_rank(late)
        if stop:
            return []
        if late:
            return [t.name for t in tasks[index:]]
        on_result(task, score_task(task, view, max_new_tokens=max_new_tokens))
    return []
