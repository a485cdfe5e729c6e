"""metrics.json's schema: the recipes write the file through it and report/ reads it through it.

The fields are the keys a job records today (LLM recipes and the text-to-image recipe); any other
key is kept as an extra (extra="allow"), so nothing written is lost. Numbers are `int | float`
so an int stays an int in the file. The dict-valued keys the report reads inside (data,
preference, preference_accuracy, images) are small sub-models, every field optional; the others
keep their inner layout as written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)

Number = int | float | None


class Part(BaseModel):
    """A dict-valued key's inner layout: the keys the report reads; any other is kept."""
    model_config = ConfigDict(extra="allow")


class DataFacts(Part):
    format: str | None = None
    files: list | None = None
    max_input_length: int | None = None           # language-model jobs (llm/recipe.py)
    validation_source: str | None = None
    train: dict | None = None
    validation: dict | None = None
    prompt: dict | None = None
    instance_prompt: str | None = None            # text-to-image jobs (diffusion/facts.py data_facts)
    instance_images: int | None = None
    resolution: int | None = None
    center_crop: bool | None = None
    with_prior_preservation: bool | None = None
    class_prompt: str | None = None
    class_images: int | None = None
    class_images_given: int | None = None
    class_images_generated: int | None = None


class Preference(Part):
    method: str | None = None                     # dpo, orpo, simpo or kto
    beta: Number = None


class PairAccuracy(Part):
    accuracy: Number = None
    pairs: int | None = None


class PreferenceAccuracy(Part):
    before: PairAccuracy | None = None
    after: PairAccuracy | None = None


class ReportImages(Part):
    """diffusion/images.py write_report_images: the grid and each picture, beside metrics.json."""
    prompt: str | None = None
    grid: str | None = None
    before: list[str] | None = None
    after: list[str] | None = None


class MetricsFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    task: str | None = None                       # "text-to-image" for diffusion jobs; absent for LLM jobs
    method: Literal["lora", "full"] | None = None  # text-to-image jobs
    hyperparameters: dict | None = None
    phases: dict | None = None
    job: dict | None = None                        # report/jobfacts.py: what was trained, how, where
    parallelism: str | None = None
    distributed_type: str | None = None
    data: DataFacts | None = None
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
    preference: Preference | None = None
    preference_accuracy: PreferenceAccuracy | None = None
    final_reward_accuracy: Number = None           # llm/preference_metrics.py: the final evaluation's rewards
    final_reward_margin: Number = None
    final_chosen_logps: Number = None
    final_rejected_logps: Number = None
    # text-to-image jobs (diffusion/train.py)
    instance_prompt: str | None = None
    instance_images: int | None = None
    class_images: int | None = None
    class_images_generated: int | None = None
    resolution: int | None = None
    trainable_parameters: int | None = None
    initial_loss: Number = None
    final_loss: Number = None
    loss_history: list[tuple[int, Number]] | None = None
    train_images: int | None = None
    train_images_per_second: Number = None
    fid_score_before: Number = None
    fid_score: Number = None
    fid_images: int | None = None
    images: ReportImages | None = None

    def as_dict(self) -> dict:
        """The keys that were set, in the order they were given (the order metrics.json keeps)."""
        return self.model_dump(exclude_unset=True)


def metrics_json(results: dict) -> str:
    """metrics.json's text: `results` validated by MetricsFile, written key for key as recorded."""
    dumped = MetricsFile.model_validate(results).as_dict()
    return json.dumps(_as_recorded(dumped, results), indent=2, default=str) + "\n"


def _as_recorded(dumped, given):
    """`dumped` with every dict's keys in `given`'s order (a sub-model dumps its fields first)."""
    if isinstance(dumped, dict) and isinstance(given, dict):
        return {key: _as_recorded(dumped[key], given[key]) for key in given}
    return dumped


def write_metrics(path: Path, results: dict) -> None:
    path.write_text(metrics_json(results))


def read_metrics(values: dict) -> MetricsFile:
    """A metrics.json read back; one that does not fit the schema (an older or edited file) is
    still shown as it is, unvalidated."""
    try:
        return MetricsFile.model_validate(values)
    except ValidationError as e:
        log.warning("metrics.json does not fit its schema (%s); it is shown as it is", e.errors()[0]["loc"])
        return _unvalidated(MetricsFile, values)


def _unvalidated(model: type[BaseModel], values: dict) -> BaseModel:
    """`model` built as it is, without validation; a dict under a sub-model's field becomes that
    sub-model (also unvalidated), so the report reads an unfit file by attribute as a fit one."""
    built = {}
    for key, value in values.items():
        field = model.model_fields.get(key)
        part = next((t for t in get_args(field.annotation) if isinstance(t, type) and issubclass(t, Part)),
                    None) if field else None
        built[key] = _unvalidated(part, value) if part and isinstance(value, dict) else value
    return model.model_construct(**built)
