"""metrics.json's schema: the recipes write the file through it and report/ reads it through it.

The fields are the keys a job records today (LLM recipes and the text-to-image recipe); any other
key is kept as an extra (extra="allow"), so nothing written is lost. Numbers are `int | float`
so an int stays an int in the file; dict-valued keys keep their inner layout as written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)

Number = int | float | None


class MetricsFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    task: str | None = None                       # "text-to-image" for diffusion jobs; absent for LLM jobs
    method: Any = None                             # diffusion: lora or full
    hyperparameters: dict | None = None
    phases: dict | None = None
    job: dict | None = None                        # report/jobfacts.py: what was trained, how, where
    parallelism: str | None = None
    distributed_type: str | None = None
    data: dict | None = None
    parameters: dict | None = None
    quantization: str | None = None
    quantized_layers: int | None = None
    memory_estimate_gib: Number = None
    batching: dict | None = None
    packing: dict | None = None
    liger_kernel: dict | None = None
    loss: dict | None = None
    validation_overlap: dict | None = None
    checkpoints: dict | None = None
    checkpoints_superseded: dict | None = None
    eval_before_skipped: str | None = None
    peak_memory_gib: dict | None = None
    steps: int | None = None
    epochs: Number = None
    train_loss: Number = None
    train_perplexity: Number = None
    train_runtime_s: Number = None
    train_tokens: Number = None
    train_tokens_per_second: Number = None
    mfu: Number = None
    resumed_from: str | None = None
    already_trained: str | None = None
    eval_loss_before: Number = None
    eval_loss: Number = None
    perplexity_before: Number = None
    perplexity: Number = None
    rouge_before: dict | None = None
    rouge1: Number = None                          # evaluation/generation.py SCORE_KEYS, after training
    rouge2: Number = None
    rougeL: Number = None
    rougeLsum: Number = None
    exact_match: Number = None
    general_knowledge: dict | None = None
    evaluation: dict | None = None
    evaluation_unscored: dict | None = None
    evaluation_gate: dict | None = None
    preference: dict | None = None
    preference_accuracy: dict | None = None
    final_reward_accuracy: Number = None           # llm/preference_metrics.py: the final evaluation's rewards
    final_reward_margin: Number = None
    final_chosen_logps: Number = None
    final_rejected_logps: Number = None

    def as_dict(self) -> dict:
        """The keys that were set, in the order they were given (the order metrics.json keeps)."""
        return self.model_dump(exclude_unset=True)


def metrics_json(results: dict) -> str:
    """metrics.json's text: `results` validated by MetricsFile, written key for key as recorded."""
    dumped = MetricsFile.model_validate(results).as_dict()
    return json.dumps({key: dumped[key] for key in results}, indent=2, default=str) + "\n"


def write_metrics(path: Path, results: dict) -> None:
    path.write_text(metrics_json(results))


def read_metrics(values: dict) -> MetricsFile:
    """A metrics.json read back; one that does not fit the schema (an older or edited file) is
    still shown as it is, unvalidated."""
    try:
        return MetricsFile.model_validate(values)
    except ValidationError as e:
        log.warning("metrics.json does not fit its schema (%s); it is shown as it is", e.errors()[0]["loc"])
        return MetricsFile.model_construct(**values)
