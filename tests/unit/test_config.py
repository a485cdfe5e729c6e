import logging

import pytest

from tuneforge.config import FIELDS, TrainConfig, markdown_table, parse_hyperparameters
from tuneforge.llm.arguments import TRAINING_ARGUMENTS, training_arguments
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


FLOAT_FIELDS = [name for name, spec in FIELDS.items() if spec.type == "float"]


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


@pytest.mark.parametrize("name, minus_one", [("max_train_samples", "all rows"), ("max_steps", "all epochs"),
                                             ("per_device_eval_batch_size", "the training batch size")])
def test_zero_is_refused_where_minus_one_means_all(name, minus_one):
    with pytest.raises(HyperparameterError) as err:
        parse_hyperparameters({name: "0"})
    assert str(err.value) == f"hyperparameter {name}: 0 is out of range. Fix: use -1 ({minus_one}) or a value >= 1"
    assert getattr(parse_hyperparameters({name: "-1"}), name) == -1 == getattr(TrainConfig(), name)
    assert getattr(parse_hyperparameters({name: "1"}), name) == 1


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


@pytest.mark.parametrize("name", ["packing", "liger_kernel"])
@pytest.mark.parametrize("encoded,expected", [("auto", "auto"), ('"auto"', "auto"), ("True", "true"), ('"true"', "true"),
                                              (True, "true"), (1, "true"), ("1", "true"), ("False", "false"),
                                              (False, "false"), ("0", "false"), ('"FALSE"', "false")])
def test_tri_state_fields_take_booleans_in_every_encoding(name, encoded, expected):
    assert getattr(parse_hyperparameters({name: encoded}), name) == expected


def test_tri_state_rejects_other_words_naming_the_choices():
    with pytest.raises(HyperparameterError) as err:
        parse_hyperparameters({"packing": "sometimes"})
    assert str(err.value) == ("hyperparameter packing: 'sometimes' is not allowed. Fix: use one of auto, true, false")


def test_choices_and_types_read_clearly():
    with pytest.raises(HyperparameterError) as err:
        parse_hyperparameters({"bits": '"5"'})
    assert str(err.value) == "hyperparameter bits: 5 is not allowed. Fix: use one of 4, 8, 16"
    assert parse_hyperparameters({"bits": '"8"'}).quantization == "int8"
    with pytest.raises(HyperparameterError) as err:
        parse_hyperparameters({"merge_weights": "maybe"})
    assert str(err.value) == ("hyperparameter merge_weights: 'maybe' is not true or false. "
                              "Fix: set merge_weights to true or false")
    with pytest.raises(HyperparameterError, match="hyperparameter epoch: True is not an integer"):
        parse_hyperparameters({"epoch": True})  # JSON true is not the number 1


def test_an_alias_error_names_the_alias_given():
    with pytest.raises(HyperparameterError) as err:
        parse_hyperparameters({"batch_size": "many"})
    assert str(err.value).startswith("hyperparameter batch_size: 'many' is not an integer")
    assert parse_hyperparameters({"epoch": "3", "epochCount": '"3"'}).epoch == 3  # the same value twice is fine
    assert parse_hyperparameters({"learning_rate": "0.0001", "learningRate": "1e-4"}).learning_rate == 1e-4


def test_first_problem_in_the_order_given_is_reported():
    with pytest.raises(HyperparameterError, match="hyperparameter epoch:"):
        parse_hyperparameters({"epoch": "0", "lora_rank": "8"})
    with pytest.raises(HyperparameterError, match="hyperparameter lora_rank:"):
        parse_hyperparameters({"lora_rank": "8", "epoch": "0"})


def test_config_is_immutable_and_shortcuts_do_not_rewrite_it():
    cfg = parse_hyperparameters({"bf16": "True"})
    assert cfg.precision == "auto" and cfg.effective_precision == "bf16"
    assert parse_hyperparameters({"fp16": "true"}).effective_precision == "fp16"
    assert parse_hyperparameters({"precision": "fp32"}).effective_precision == "fp32"
    with pytest.raises(Exception):
        cfg.epoch = 3
    assert cfg.to_dict()["bf16"] is True and set(cfg.to_dict()) == set(FIELDS)


def _arguments(caplog, has_validation=True, **values):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tuneforge.llm.arguments"):
        args = training_arguments(parse_hyperparameters({k: str(v) for k, v in values.items()}),
                                  has_validation=has_validation)
    return args, caplog.text


def test_training_arguments_follow_the_table(caplog):
    args, logged = _arguments(caplog, epoch=2, learning_rate=0.001, per_device_train_batch_size=3, seed=7,
                              load_best_model_at_end=False)
    assert (args["num_train_epochs"], args["learning_rate"], args["per_device_train_batch_size"]) == (2, 0.001, 3)
    assert (args["seed"], args["data_seed"], args["per_device_eval_batch_size"]) == (7, 7, 3)
    assert (args["eval_strategy"], args["save_strategy"], args["load_best_model_at_end"]) == ("epoch", "epoch", False)
    assert logged == ""  # nothing asked for was changed


def test_the_table_joins_real_names_on_both_sides():
    import dataclasses

    from transformers import TrainingArguments

    arguments = {f.name for f in dataclasses.fields(TrainingArguments)}
    assert set(TRAINING_ARGUMENTS) <= set(FIELDS)
    assert set(TRAINING_ARGUMENTS.values()) <= arguments


def test_every_override_is_logged(caplog):
    args, logged = _arguments(caplog, evaluation_strategy="steps", eval_steps=5)
    assert (args["eval_strategy"], args["save_strategy"]) == ("epoch", "epoch")
    assert "eval_strategy=epoch instead of evaluation_strategy=steps: load_best_model_at_end" in logged
    args, logged = _arguments(caplog, has_validation=False)
    assert args["eval_strategy"] == "no" and args["load_best_model_at_end"] is False
    assert "instead of evaluation_strategy=epoch: there is no validation data" in logged
    assert "load_best_model_at_end=False instead of load_best_model_at_end=True" in logged
    args, logged = _arguments(caplog, evaluation_strategy="steps", eval_steps=5, checkpoint_steps=8)
    assert (args["eval_strategy"], args["eval_steps"], args["save_steps"]) == ("steps", 8, 8)
    assert "eval_steps=8 instead of eval_steps=5" in logged
    args, logged = _arguments(caplog, warmup_steps=3, warmup_ratio=0.1)
    assert args["warmup_steps"] == 3 and "instead of warmup_ratio=0.1" in logged


def test_markdown_table_cells_never_split():
    import re

    rows = [line for line in markdown_table().splitlines() if line.startswith("| `")]
    widths = {len(re.findall(r"(?<!\\)\|", row)) for row in rows[:len(FIELDS)]}
    assert widths == {6}, "a bare | inside a cell (e.g. `int | None`) splits the row"
    assert "int \\| None" in markdown_table()


@pytest.mark.parametrize("value", ["tickets", "tickets=high", "=0.5", "a=0.5,b"])
def test_eval_min_score_must_be_task_score_pairs(value):
    with pytest.raises(HyperparameterError, match="eval_min_score is not task=score pairs"):
        parse_hyperparameters({"eval_min_score": value})
    config = parse_hyperparameters({"eval_min_score": "tickets=0.9, general_knowledge=0.5"})
    assert config.eval_min_score == "tickets=0.9, general_knowledge=0.5"
