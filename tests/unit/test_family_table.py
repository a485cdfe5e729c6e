"""The family table (families.py) is the one source of model-family facts: tiny models, packing
and the chunked loss read it, every row builds a tiny config of its own model_type, and no other
module keeps a list of family names."""

import ast
from pathlib import Path

import pytest

from tuneforge import families, tiny
from tuneforge.llm import preflight
from tuneforge.llm import loss, packing

PACKAGE = Path(__file__).resolve().parents[2] / "container" / "tuneforge"


def test_the_readers_use_the_table():
    assert tiny.FAMILIES == tuple(f.model_type for f in families.FAMILY_TABLE if f.listed)
    assert packing.PACKING_FAMILIES is families.PACKING_FAMILIES
    assert loss.CHUNKED_LOSS_FAMILIES is families.CHUNKED_LOSS_FAMILIES
    assert "families import CHUNKED_LOSS_FAMILIES" in Path(preflight.__file__).read_text()


def test_model_types_are_unique():
    names = [f.model_type for f in families.FAMILY_TABLE]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("family", families.FAMILY_TABLE, ids=lambda f: f.model_type)
def test_every_family_has_a_tiny_config_of_its_own_type(family):
    config = tiny.model_config(family.model_type, tiny.VOCAB_SIZE)
    assert config.model_type == family.model_type
    assert config.vocab_size == tiny.VOCAB_SIZE
    assert not (config.is_encoder_decoder and (family.packs or family.plain_head))


def test_unknown_family_names_the_choices():
    with pytest.raises(ValueError, match="llama"):
        tiny.model_config("no-such-family", 10)


def _family_name_sets(tree) -> list[int]:
    """Lines of literal sets/tuples/lists naming three or more of the table's families."""
    names = set(families.BY_TYPE)
    return [node.lineno for node in ast.walk(tree) if isinstance(node, (ast.Set, ast.Tuple, ast.List))
            and sum(isinstance(e, ast.Constant) and e.value in names for e in node.elts) >= 3]


def test_no_other_module_lists_families():
    found = [f"{path.relative_to(PACKAGE)}:{line}" for path in PACKAGE.rglob("*.py") if path.name != "families.py"
             for line in _family_name_sets(ast.parse(path.read_text()))]
    assert not found, "read the family table (families.py) instead: " + ", ".join(found)
    assert _family_name_sets(ast.parse('X = frozenset({"llama", "gpt2", "bloom"})'))  # the finder finds one
