"""The format registry (data/registry) is the one source of data formats: every module there
defines a complete FORMAT, the data_format hyperparameter's choices are the registry's names,
detection asks the formats in their stages, and no module compares format names itself."""

import ast
import pkgutil
import typing
from pathlib import Path

import pytest

from tuneforge import config
from tuneforge.data import registry
from tuneforge.data.registry import FORMATS, STAGES, DataFormat, detection_order

PACKAGE = Path(__file__).resolve().parents[2] / "container" / "tuneforge"
ATTRIBUTES = [name for name in DataFormat.__annotations__]


def test_the_config_choices_are_the_registry():
    choices = typing.get_args(config.TrainConfig.model_fields["data_format"].annotation)
    assert choices == ("auto", *FORMATS)


def test_every_module_in_the_folder_is_registered():
    modules = [info.name for info in pkgutil.iter_modules(registry.__path__) if not info.name.startswith("_")]
    assert sorted(FORMATS) == sorted(modules)
    assert list(FORMATS) == ["instruction", "chat", "domain", "table", "preference", "unpaired"]


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_is_complete(name):
    fmt = FORMATS[name]
    missing = [attribute for attribute in ATTRIBUTES + ["detect", "read"] if not hasattr(fmt, attribute)]
    assert not missing
    assert fmt.name == name and fmt.stage in STAGES and fmt.methods
    assert fmt.prompt_kind in (None, name)  # a prompt kind is the name of the format that makes it
    assert not (fmt.free_text and (fmt.generates or fmt.templated or fmt.conversational))
    if "sft" not in fmt.methods:
        assert fmt.description and fmt.row_shape  # a refusal names the rows and shows one


def test_detection_ends_with_the_one_format_every_channel_is():
    order = detection_order()
    assert [f.name for f in order] == ["preference", "unpaired", "instruction", "chat", "table", "domain"]
    assert [f for f in order if f.stage == "fallback"] == [order[-1]]
    assert len(set(f.position for f in order)) == len(order)


def _name_comparisons(tree) -> list[int]:
    """Lines comparing something with a format's name ("chat" == x, x in ("preference", ...))."""
    names = set(FORMATS)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for side in [node.left, *node.comparators]:
            values = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
            if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                found.append(node.lineno)
                break
    return found


# samples.py writes sample data per kind (its own `kind` argument, not a channel's format); serve/
# compares request kinds and routes ("chat") and, in payloads.py, a prompt kind (issue 25 item 4)
COMPARES_NAMES = {"samples.py"}


def test_no_module_compares_format_names():
    found = [f"{path.relative_to(PACKAGE)}:{line}" for path in PACKAGE.rglob("*.py")
             if str(path.relative_to(PACKAGE)) not in COMPARES_NAMES and not {"registry", "serve"} & set(path.parts)
             for line in _name_comparisons(ast.parse(path.read_text()))]
    assert not found, "ask the format registry (data/registry) instead: " + ", ".join(found)
    assert _name_comparisons(ast.parse('x = fmt in ("preference", "unpaired")'))  # the finder finds one
