"""TuneforgeTrainer (llm/trainer.py) overrides private Trainer methods, which transformers may
change in any release without notice. Each is listed here with the parameters the override takes
and passes on; the tests fail when the installed transformers no longer has one with those
parameters, when an override is added without being listed, and when the installed transformers
is not the version the locks pin (the version these overrides were checked against)."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect

import pytest
from transformers import Trainer

from tuneforge.llm.trainer import TuneforgeTrainerMixin

from .test_lock import REPO, pins

# private Trainer method -> the parameters of its signature the override relies on, in order
PRIVATE_OVERRIDES = {
    "_get_train_sampler": ["self", "train_dataset"],
    "_save_checkpoint": ["self", "model", "trial"],
    "_save": ["self", "output_dir", "state_dict"],
    "_save_optimizer_and_scheduler": ["self", "output_dir"],
}
# public ones, pinned alike: the override passes its arguments on by position
PUBLIC_OVERRIDES = {
    "compute_loss": ["self", "model", "inputs", "return_outputs", "num_items_in_batch"],
    "get_eval_dataloader": ["self", "eval_dataset"],
}
OVERRIDES = {**PRIVATE_OVERRIDES, **PUBLIC_OVERRIDES}
# the TRL trainers the preference recipes put the mixin on (llm/preference_methods.py)
TRL_TRAINERS = ["trl:DPOTrainer", "trl:KTOTrainer", "trl.experimental.orpo:ORPOTrainer",
                "trl.experimental.cpo:CPOTrainer"]


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def _defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()}


def test_every_overridden_trainer_method_is_listed():
    overridden = {name for name, value in vars(TuneforgeTrainerMixin).items()
                  if callable(value) and hasattr(Trainer, name) and name != "__init__"}
    assert overridden == set(OVERRIDES), "list each Trainer method TuneforgeTrainer overrides here"


def test_the_mixins_own_methods_do_not_shadow_trainer_ones_by_accident():
    own = {name for name, value in vars(TuneforgeTrainerMixin).items() if callable(value) and name != "__init__"}
    assert own - set(OVERRIDES) == {"_write_model", "_checkpoint_writer"}
    assert not any(hasattr(Trainer, name) for name in own - set(OVERRIDES))


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_the_installed_trainer_has_each_overridden_method_with_the_expected_signature(name):
    assert callable(getattr(Trainer, name, None)), f"transformers' Trainer no longer has {name}"
    assert _parameters(getattr(Trainer, name)) == OVERRIDES[name]
    override = getattr(TuneforgeTrainerMixin, name)
    assert _parameters(override) == OVERRIDES[name]
    trainer_defaults = {k: v for k, v in _defaults(getattr(Trainer, name)).items() if v is not inspect.Parameter.empty}
    assert {k: v for k, v in _defaults(override).items() if v is not inspect.Parameter.empty} == trainer_defaults


@pytest.mark.parametrize("where", TRL_TRAINERS)
def test_trls_trainers_keep_the_signatures_the_overrides_call_through(where):
    module, name = where.split(":")
    trainer_class = getattr(importlib.import_module(module), name)
    assert issubclass(trainer_class, Trainer)
    for method, parameters in OVERRIDES.items():
        assert _parameters(getattr(trainer_class, method)) == parameters, f"{name}.{method}"


@pytest.mark.parametrize("lock", ["constraints.txt", "docker/requirements-train.txt"])
def test_the_installed_transformers_is_the_locked_one(lock):
    assert importlib.metadata.version("transformers") == pins(REPO / lock)["transformers"], \
        "the overrides above were checked against the locked transformers: check them again, then update the lock"
