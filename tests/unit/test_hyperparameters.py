"""The base every hyperparameter schema is declared on: SageMaker encodings, aliases, rules, messages."""

from typing import Literal

import pytest
from pydantic import ValidationError

from tuneforge.config import TrainConfig
from tuneforge.diffusion.config import DreamBoothConfig
from tuneforge.errors import HyperparameterError
from tuneforge.hyperparameters import (Flag, Float, Int, ModuleList, OptionalInt, Rule, SageMakerHyperparameters, Text,
                                       _unwrap, hp, parse_flag)


class Demo(SageMakerHyperparameters):
    unknown_name = "unknown demo hyperparameter"
    names_doc = "docs/demo.md"

    steps: Int = hp(3, "Steps.", ge=1, le=100, aliases={"numSteps": (1, 10), "num_steps": None})
    scale: Float = hp(0.5, "Scale.", gt=0.0, le=1.0)
    verbose: Flag = hp(False, "Talk | a lot.")
    workers: OptionalInt = hp(None, "Workers.", ge=1)
    name: Text = hp("", "Name.")
    modules: ModuleList = hp("", "Modules.")
    mode: Literal["fast", "slow"] = hp("fast", "Mode.")

    COMBINATION_RULES = (
        Rule(lambda c: c.mode == "slow" and c.steps > 50, "{steps} steps are too many when slow",
             "hyperparameters mode/steps", "use at most 50 steps"),
    )


def _error(raw: dict) -> str:
    with pytest.raises(HyperparameterError) as caught:
        Demo.parse(raw)
    return str(caught.value)


def test_unwrap_peels_json_quoting_only():
    assert _unwrap('"\\"5\\""') == "5" and _unwrap("plain") == "plain" and _unwrap(5) == 5
    assert _unwrap('"not json') == '"not json'


@pytest.mark.parametrize("raw, field, expected", [
    ({"steps": '"5"'}, "steps", 5), ({"steps": "5.0"}, "steps", 5), ({"steps": 5}, "steps", 5),
    ({"verbose": "yes"}, "verbose", True), ({"verbose": '"False"'}, "verbose", False),
    ({"verbose": "ON"}, "verbose", True),
    ({"workers": "None"}, "workers", None), ({"workers": '"null"'}, "workers", None), ({"workers": "3"}, "workers", 3),
    ({"scale": "2e-4"}, "scale", 2e-4), ({"scale": '"0.25"'}, "scale", 0.25),
    ({"name": ["a", "b"]}, "name", "a,b"), ({"name": 5}, "name", "5"),
    ({"modules": '["q_proj", "v_proj"]'}, "modules", "q_proj,v_proj"), ({"mode": '"slow"'}, "mode", "slow"),
])
def test_every_declared_type_reads_sagemaker_strings(raw, field, expected):
    assert getattr(Demo.parse(raw), field) == expected


@pytest.mark.parametrize("raw, message", [
    ({"scale": "nan"}, "hyperparameter scale: 'nan' is not a finite number. Fix: set scale to a finite number"),
    ({"steps": "x"}, "hyperparameter steps: 'x' is not an integer. Fix: set steps to an integer"),
    ({"steps": True}, "hyperparameter steps: True is not an integer"),
    ({"verbose": "maybe"}, "hyperparameter verbose: 'maybe' is not true or false. Fix: set verbose to true or false"),
    ({"workers": "x"}, "hyperparameter workers: 'x' is not an integer or None"),
    ({"steps": "0"}, "hyperparameter steps: 0 is out of range. Fix: use a value >= 1 and <= 100"),
    ({"scale": "0"}, "hyperparameter scale: 0 is out of range. Fix: use a value > 0.0 and <= 1.0"),
    ({"numSteps": "11"}, "hyperparameter numSteps: 11 is out of range. Fix: use a value >= 1 and <= 10"),
    ({"mode": "medium"}, "hyperparameter mode: 'medium' is not allowed. Fix: use one of fast, slow"),
    ({"stpes": "1"}, "hyperparameter stpes: unknown demo hyperparameter. Fix: did you mean 'steps'?"),
    ({"zzzz": "1"}, "hyperparameter zzzz: unknown demo hyperparameter. Fix: see docs/demo.md for the valid names"),
    ({"steps": "2", "num_steps": "3"}, "hyperparameter steps: set twice, as steps='2' and num_steps='3'"),
    ({"mode": "slow", "steps": "60"},
     "hyperparameters mode/steps: 60 steps are too many when slow. Fix: use at most 50"),
])
def test_problems_read_as_one_message_naming_key_and_fix(raw, message):
    assert _error(raw).startswith(message)


def test_first_problem_in_the_order_given_wins():
    assert _error({"mode": "medium", "steps": "0"}).startswith("hyperparameter mode:")
    assert _error({"steps": "0", "mode": "medium"}).startswith("hyperparameter steps:")


def test_sagemaker_keys_are_dropped_and_one_value_under_two_names_is_fine():
    config = Demo.parse({"sagemaker_program": '"train.py"', "accept_eula": "true", "steps": "4", "num_steps": "4.0"})
    assert config.steps == 4


def test_schemas_are_frozen_and_copy_with_updates():
    config = Demo.parse({"steps": "4"})
    with pytest.raises(ValidationError):
        config.steps = 5
    assert config.model_copy(update={"steps": 5}).steps == 5 and config.to_dict()["steps"] == 4


def test_each_schema_lists_its_own_fields_and_aliases():
    assert list(Demo.fields()) == ["steps", "scale", "verbose", "workers", "name", "modules", "mode"]
    assert Demo.aliases() == {"numSteps": ("steps", (1, 10)), "num_steps": ("steps", None)}
    assert Demo.fields()["workers"].type == "int | None" and Demo.fields()["mode"].choices == ("fast", "slow")
    assert "numSteps" not in TrainConfig.aliases() and "epochCount" not in Demo.aliases()


def test_markdown_rows_escape_bars_inside_cells():
    rows = Demo.markdown_rows()
    assert rows[0] == "| name | type | default | range / choices | meaning |" and len(rows) == 2 + len(Demo.fields())
    assert "| `workers` | int \\| None | `None` | >= 1 | Workers. |" in rows
    assert "| `verbose` | bool | `False` |  | Talk \\| a lot. |" in rows


@pytest.mark.parametrize("schema", [TrainConfig, DreamBoothConfig])
def test_both_job_kinds_are_declared_on_the_one_base(schema):
    assert issubclass(schema, SageMakerHyperparameters)
    with pytest.raises(HyperparameterError, match="is not true or false"):
        schema.parse({"gradient_checkpointing": "perhaps"})
    assert schema.parse({"gradient_checkpointing": '"\\"yes\\""'}).gradient_checkpointing is True


def test_parse_flag_words():
    assert parse_flag("Yes") is True and parse_flag('"off"') is False and parse_flag(1) is True
    with pytest.raises(ValueError, match="is not true or false"):
        parse_flag("perhaps")
