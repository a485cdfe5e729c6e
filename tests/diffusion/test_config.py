"""Text-to-image hyperparameters: JumpStart's names and defaults, every SageMaker encoding, clear errors."""

import pytest

from tuneforge.diffusion.config import ALIASES, FIELDS, markdown_table, parse_diffusion_hyperparameters
from tuneforge.errors import HyperparameterError

JUMPSTART_DEFAULTS = {"epochs": 20, "max_steps": None, "batch_size": 1, "with_prior_preservation": False,
                      "num_class_images": 100, "learning_rate": 2e-06, "prior_loss_weight": 1.0, "center_crop": False,
                      "lr_scheduler": "constant", "adam_weight_decay": 0.01, "adam_beta1": 0.9, "adam_beta2": 0.999,
                      "adam_epsilon": 1e-08, "gradient_accumulation_steps": 1, "max_grad_norm": 1.0, "seed": 0,
                      "compute_fid": False}


def test_defaults_are_jumpstarts():
    config = parse_diffusion_hyperparameters({})
    assert {name: getattr(config, name) for name in JUMPSTART_DEFAULTS} == JUMPSTART_DEFAULTS


@pytest.mark.parametrize("encoded, expected", [
    ("True", True), ("true", True), ('"True"', True), ('"\\"true\\""', True), ("False", False), ('"false"', False)])
def test_flags_in_every_encoding(encoded, expected):
    assert parse_diffusion_hyperparameters({"with_prior_preservation": encoded}).with_prior_preservation is expected


@pytest.mark.parametrize("encoded", ["5", '"5"', '"\\"5\\""', "5.0", 5])
def test_numbers_in_every_encoding(encoded):
    config = parse_diffusion_hyperparameters({"epochs": encoded, "max_steps": encoded})
    assert (config.epochs, config.max_steps) == (5, 5)


@pytest.mark.parametrize("encoded", ["None", '"None"', "null", ""])
def test_max_steps_none(encoded):
    assert parse_diffusion_hyperparameters({"max_steps": encoded}).max_steps is None


def test_sagemaker_keys_ignored_and_aliases_accepted():
    config = parse_diffusion_hyperparameters({"sagemaker_region": '"us-east-1"', "train_batch_size": "2",
                                              "num_train_epochs": "3", "lr_scheduler_type": "linear",
                                              "learning_rate": '"0.0001"'})
    assert (config.batch_size, config.epochs, config.lr_scheduler, config.learning_rate) == (2, 3, "linear", 1e-4)
    assert set(ALIASES.values()) <= set(FIELDS)


@pytest.mark.parametrize("raw, where, fix", [
    ({"with_prior_preservaton": "True"}, "with_prior_preservaton", "with_prior_preservation"),
    ({"epochs": "0"}, "epochs", ">= 1"),
    ({"learning_rate": "abc"}, "learning_rate", "a finite number"),
    ({"center_crop": "maybe"}, "center_crop", "true or false"),
    ({"lr_scheduler": "exponential"}, "lr_scheduler", "constant"),
    ({"resolution": "500"}, "resolution", "multiple of 8"),
    ({"fid_images": "1"}, "fid_images", ">= 2"),
    ({"epochs": "3", "num_train_epochs": "4"}, "epochs", "keep one"),
])
def test_bad_values_name_the_key_and_the_fix(raw, where, fix):
    with pytest.raises(HyperparameterError) as caught:
        parse_diffusion_hyperparameters(raw)
    assert where in str(caught.value) and fix in str(caught.value)


def test_markdown_lists_every_field_and_alias():
    table = markdown_table()
    assert all(f"| `{name}` |" in table for name in FIELDS)
    assert all(f"| `{alias}` |" in table for alias in ALIASES)


def test_a_sagemaker_string_map_in_every_encoding_parses():
    """What the SageMaker SDK sends: every value a string, some JSON-quoted, floats in e-notation."""
    config = parse_diffusion_hyperparameters({
        "epochs": '"5"', "max_train_steps": '"\\"40\\""', "train_batch_size": "2", "learning_rate": "1e-4",
        "weight_decay": '"1e-3"', "with_prior_preservation": "True", "center_crop": '"false"', "rank": '"8"',
        "peft_type": '"lora"', "lr_scheduler_type": "cosine", "max_grad_norm": "0.5", "resolution": '"512"',
        "sagemaker_submit_directory": '"s3://bucket/source.tar.gz"', "sagemaker_region": '"us-west-2"'})
    assert (config.epochs, config.max_steps, config.batch_size, config.lora_r) == (5, 40, 2, 8)
    assert (config.learning_rate, config.adam_weight_decay, config.max_grad_norm) == (1e-4, 1e-3, 0.5)
    assert config.with_prior_preservation is True and config.center_crop is False
    assert (config.peft_type, config.use_lora, config.lr_scheduler, config.resolution) == ("lora", True, "cosine", 512)


def test_alias_range_and_typo_messages_read_as_on_the_language_model_side():
    """Both job kinds word a problem alike: the key given, what is wrong, the range or the closest name."""
    from tuneforge.config import parse_hyperparameters

    def message(parse, raw):
        with pytest.raises(HyperparameterError) as caught:
            parse(raw)
        return str(caught.value)

    assert message(parse_diffusion_hyperparameters, {"rank": "0"}) == \
        "hyperparameter rank: 0 is out of range. Fix: use a value >= 1 and <= 1024"
    assert message(parse_hyperparameters, {"lora_r": "0"}) == \
        "hyperparameter lora_r: 0 is out of range. Fix: use a value >= 1 and <= 1024"
    assert message(parse_diffusion_hyperparameters, {"learning_rate": "0"}) == \
        message(parse_hyperparameters, {"learning_rate": "0"})
    assert message(parse_diffusion_hyperparameters, {"lerning_rate": "1e-4"}) == \
        "hyperparameter lerning_rate: unknown text-to-image hyperparameter. Fix: did you mean 'learning_rate'?"
    assert message(parse_hyperparameters, {"lerning_rate": "1e-4"}) == \
        "hyperparameter lerning_rate: unknown hyperparameter. Fix: did you mean 'learning_rate'?"
    assert message(parse_diffusion_hyperparameters, {"zzzz": "1"}).endswith(
        "see docs/hyperparameters.md (text-to-image) for the valid names")
    assert message(parse_diffusion_hyperparameters, {"epoch": "2", "epochs": "3"}) == \
        "hyperparameter epochs: set twice, as epoch='2' and epochs='3'. Fix: keep one of the two names"


def test_config_is_immutable_and_serializes_every_field():
    config = parse_diffusion_hyperparameters({"epochs": "3"})
    with pytest.raises(Exception):
        config.epochs = 4
    assert config.model_copy(update={"epochs": 4}).epochs == 4
    assert list(config.to_dict()) == list(FIELDS) and config.to_dict()["epochs"] == 3
