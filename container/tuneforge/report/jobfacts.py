"""Facts about a running job that only the training process knows, recorded in metrics.json so the
report can be rebuilt later from output/data alone: what model and method, on what hardware, which
hyperparameters were set by the user and which were defaults, and one training row as the model
saw it (the part it learns marked)."""

from __future__ import annotations

import functools
import os
import platform

from ..model_folder import model_name

IGNORE = -100  # data/tokenize.py: label of tokens the loss skips
EXAMPLE_TOKENS = 400  # enough to show the template around one row, short enough to read


def _never_fails(describe):
    """These facts only feed the report: a failure to gather one is logged, never fails the job."""
    @functools.wraps(describe)
    def guarded(*args, **kwargs) -> dict:
        from ..logs import never_fail

        return never_fail(lambda: describe(*args, **kwargs), f"gathering facts for the report ({describe.__name__})") or {}
    return guarded


@_never_fails
def hyperparameter_facts(config, raw: dict | None) -> dict:
    """Every value the job ran with, and the canonical names the user set (aliases resolved)."""
    from ..config import ALIASES, FIELDS

    given = set()
    for key in raw or {}:
        name = ALIASES[key][0] if key in ALIASES else key
        if name in FIELDS:
            given.add(name)
    return {"values": config.to_dict(), "given": sorted(given)}


def training_method(config) -> str:
    if not config.use_lora:
        return "full fine-tuning"
    lora = f"LoRA (r={config.lora_r}, alpha={config.lora_alpha}, dropout={config.lora_dropout})"
    quantization = config.quantization
    return lora if quantization == "none" else f"QLoRA, {quantization} base, {lora}"


def hardware() -> str:
    import torch

    from ..job.distributed import world_size

    processes = world_size()
    if torch.cuda.is_available():
        device = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        device = f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    return f"{device}; {processes} process(es)"


def rendered_example(tokenizer, feature: dict, seq2seq: bool) -> list[list]:
    """[[text, trained], ...]: the first tokens of one training row, decoded in runs of tokens the
    loss skips (trained=False) or learns (trained=True)."""
    if seq2seq:  # the encoder reads input_ids; the decoder learns labels
        source = tokenizer.decode(feature["input_ids"][:EXAMPLE_TOKENS])
        target = tokenizer.decode([t for t in feature["labels"][:EXAMPLE_TOKENS] if t != IGNORE])
        return [[source, False], ["\n[target] ", False], [target, True]]
    ids, labels = feature["input_ids"][:EXAMPLE_TOKENS], feature["labels"][:EXAMPLE_TOKENS]
    runs: list[list] = []
    for token, label in zip(ids, labels):
        trained = label != IGNORE
        if runs and runs[-1][1] == trained:
            runs[-1][0].append(token)
        else:
            runs.append([[token], trained])
    return [[tokenizer.decode(tokens), trained] for tokens, trained in runs]


@_never_fails
def describe_job(recipe) -> dict:
    """What was trained, how and where; called at the end of the recipe's setup."""
    config, loaded = recipe.config, recipe.loaded
    model_config = loaded.model.config
    features = recipe.train_tokens.features
    return {
        "base_model": model_name(recipe.base_path), "base_model_path": str(recipe.base_path),
        "family": getattr(model_config, "model_type", None),
        "architecture": (getattr(model_config, "architectures", None) or [None])[0],
        "method": training_method(config), "precision": str(recipe.dtype).replace("torch.", ""),
        "hardware": hardware(),
        "example": rendered_example(recipe.tokenizer, features[0], loaded.seq2seq) if features else None,
    }
