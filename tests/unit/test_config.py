import pytest

from tuneforge.config import TrainConfig, markdown_table, parse_hyperparameters
from tuneforge.errors import HyperparameterError


@pytest.mark.parametrize("encoded", ["True", "true", '"True"', '"true"', True, "1"])
def test_bool_in_every_sagemaker_encoding(encoded):
    assert parse_hyperparameters({"instruction_tuned": encoded}).instruction_tuned is True


@pytest.mark.parametrize("encoded", ["False", "false", '"False"', False, "0"])
def test_false_in_every_encoding(encoded):
    assert parse_hyperparameters({"merge_weights": encoded}).merge_weights is False


@pytest.mark.parametrize("encoded,expected", [("5", 5), ('"5"', 5), (5, 5), ("5.0", 5)])
def test_int_encodings(encoded, expected):
    assert parse_hyperparameters({"epoch": encoded}).epoch == expected


@pytest.mark.parametrize("encoded", ["0.0002", '"0.0002"', "2e-4", 0.0002])
def test_float_encodings(encoded):
    assert parse_hyperparameters({"learning_rate": encoded}).learning_rate == pytest.approx(2e-4)


def test_strings_and_lists():
    cfg = parse_hyperparameters({"peft_type": '"none"', "target_modules": '["q_proj", "v_proj"]',
                                 "preprocessing_num_workers": "None"})
    assert cfg.peft_type == "none" and cfg.target_modules == "q_proj,v_proj"
    assert cfg.preprocessing_num_workers is None


def test_jumpstart_defaults():
    cfg = parse_hyperparameters({})
    assert (cfg.epoch, cfg.learning_rate, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (5, 1e-4, 8, 32, 0.05)
    assert cfg.validation_split_ratio == 0.2 and cfg.max_input_length == -1 and cfg.seed == 10
    assert cfg.add_input_output_demarcation_key is True and cfg.instruction_tuned is False


def test_sagemaker_keys_are_ignored():
    cfg = parse_hyperparameters({"sagemaker_program": '"train.py"', "sagemaker_region": '"us-east-1"', "epoch": "2"})
    assert cfg.epoch == 2


def test_unknown_name_suggests_the_closest():
    with pytest.raises(HyperparameterError) as err:
        parse_hyperparameters({"learning_rat": "0.1"})
    assert "hyperparameter learning_rat" in str(err.value) and "'learning_rate'" in str(err.value)


def test_out_of_range_names_field_and_range():
    with pytest.raises(HyperparameterError) as err:
        parse_hyperparameters({"lora_dropout": "1.5"})
    assert "lora_dropout" in str(err.value) and "<= 1.0" in str(err.value)


FLOAT_FIELDS = [name for name, spec in __import__("tuneforge.config").config.FIELDS.items() if spec.type == "float"]


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity", '"nan"', float("nan"), float("inf")])
def test_every_float_rejects_nan_and_infinity(name, value):
    with pytest.raises(HyperparameterError) as err:
        parse_hyperparameters({name: value})
    assert f"hyperparameter {name}" in str(err.value) and "a finite number" in str(err.value)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_int_fields_reject_nan_and_infinity(value):
    with pytest.raises(HyperparameterError, match="hyperparameter epoch"):
        parse_hyperparameters({"epoch": value})


def test_wrong_type_names_field():
    with pytest.raises(HyperparameterError) as err:
        parse_hyperparameters({"epoch": "three"})
    assert "hyperparameter epoch" in str(err.value) and "'three'" in str(err.value)


def test_autopilot_aliases_and_their_ranges():
    cfg = parse_hyperparameters({"epochCount": "3", "batchSize": "32", "learningRate": "0.5",
                                 "learningRateWarmupSteps": "10"})
    assert (cfg.epoch, cfg.per_device_train_batch_size, cfg.learning_rate, cfg.warmup_steps) == (3, 32, 0.5, 10)
    with pytest.raises(HyperparameterError, match="epochCount.*<= 10"):
        parse_hyperparameters({"epochCount": "11"})  # epoch allows 1000, Autopilot's name only 10
    with pytest.raises(HyperparameterError, match="learningRateWarmupSteps"):
        parse_hyperparameters({"learningRateWarmupSteps": "251"})
    with pytest.raises(HyperparameterError, match="batchSize"):
        parse_hyperparameters({"batchSize": "65"})


def test_alias_conflict_is_reported():
    with pytest.raises(HyperparameterError, match="set twice"):
        parse_hyperparameters({"epoch": "2", "epochCount": "3"})


def test_exclusive_modes():
    with pytest.raises(HyperparameterError, match="instruction_tuned and chat_dataset"):
        parse_hyperparameters({"instruction_tuned": "True", "chat_dataset": "True"})
    with pytest.raises(HyperparameterError, match="FSDP"):
        parse_hyperparameters({"enable_fsdp": "True", "int8_quantization": "True"})


def test_quantization_names():
    assert parse_hyperparameters({"bits": "4"}).quantization == "nf4"
    assert parse_hyperparameters({"int8_quantization": "True"}).quantization == "int8"
    assert TrainConfig().quantization == "none"


def test_markdown_lists_every_field():
    table = markdown_table()
    for name in ("epoch", "lora_r", "enable_fsdp", "int8_quantization", "epochCount", "deepspeed"):
        assert f"`{name}`" in table
