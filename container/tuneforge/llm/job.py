"""The language-model recipe as the job runtime runs it (job/launcher.py's RecipeEntry): SFT and
the preference methods (training_method picks the Recipe subclass, llm/recipe.py)."""

from __future__ import annotations

import logging

from ..job.launcher import RecipeEntry, World, device_count

log = logging.getLogger("tuneforge")


def needs_torchrun(world: World, config) -> bool:
    """Several processes, or DeepSpeed/FSDP, which need a process group even on one device."""
    needed = world.size > 1 or config.deepspeed != "none" or (config.enable_fsdp and device_count() > 0)
    if needed and config.enable_fsdp and device_count() == 0:
        log.warning("enable_fsdp needs GPUs: on CPU the processes fall back to DDP")
    return needed


def parse(raw: dict):
    from ..config import parse_hyperparameters

    return parse_hyperparameters(raw)


def check_channels(paths, config) -> None:  # noqa: ARG001
    paths.train_channel()  # two training channels fail here, before any process starts


def recipe_class(config):
    """training_method picks the recipe: sft is llm/recipe.py's Recipe, the preference methods
    (dpo, orpo, simpo, kto) llm/preference.py's PreferenceRecipe, a Recipe subclass."""
    if getattr(config, "training_method", "sft") != "sft":
        from .preference import PreferenceRecipe

        return PreferenceRecipe
    from .recipe import Recipe

    return Recipe


def run(paths, config, raw: dict) -> None:
    recipe_class(config)(paths, config, raw).run()


def model_present(model_dir) -> bool:
    from ..job.artifacts import model_files_present

    return model_files_present(model_dir)


def entry() -> RecipeEntry:
    from ..config import TrainConfig

    return RecipeEntry(kind="language-model", detect=lambda paths, raw: True, parse=parse, config_type=TrainConfig,
                       check=check_channels, run=run, output_present=model_present, needs_ranks=needs_torchrun)
