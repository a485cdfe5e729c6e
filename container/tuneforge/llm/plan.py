"""The typed values the recipe decides with, instead of reading metrics.json's dict back.

`RunPlan` is what setup decided about the run (engine, parallelism, Liger, batching, packing, loss,
checkpoint writer), frozen; `Outcome` is what training and the final evaluation measured that a
later step uses. The recipe writes metrics.json's keys from them (`Recipe.results` is only
written; tests/unit/test_plan.py checks that no decision reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunPlan:
    parallelism: str                  # distributed.parallelism(): metrics.json "parallelism"
    sharded_state: bool               # DeepSpeed or FSDP: checkpoints hold sharded state
    liger: dict                       # llm/liger.py's decision: metrics.json "liger_kernel"
    checkpoint_writer_why_not: str    # "" when checkpoints are written in the background
    batching: dict | None = None      # batching.describe(): metrics.json "batching" (SFT only)
    packing: Any = None               # packing.PackingPlan; its report is metrics.json "packing" (SFT only)
    loss: dict | None = None          # loss.plan_loss(): metrics.json "loss" (SFT only)

    @property
    def engine(self) -> str:
        """The checkpoint identity's engine: DDP and single-process checkpoints hold whole weights,
        so either resumes the other ("plain"); sharded ones only under the same parallelism."""
        return self.parallelism if self.sharded_state else "plain"

    @property
    def length_grouping(self) -> bool:
        return bool(self.batching) and self.batching["strategy"] == "group_by_length"

    @property
    def chunked_loss(self) -> bool:
        return bool(self.loss) and self.loss["kind"] == "chunked"

    @property
    def packed(self) -> bool:
        return self.packing is not None and self.packing.enabled


@dataclass(frozen=True)
class Outcome:
    """Measured values later steps use, named as their metrics.json keys (None: not measured)."""
    steps: int | None = None
    train_loss: float | None = None
    train_tokens_per_second: float | None = None
    eval_loss_before: float | None = None
    eval_loss: float | None = None
    # headline score per evaluation task (and general_knowledge) before and after training: the gate's input
    scores_before: Mapping[str, float] = field(default_factory=dict)
    scores_after: Mapping[str, float] = field(default_factory=dict)
