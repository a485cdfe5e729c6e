"""Docs that must match the code."""

from pathlib import Path

from tuneforge.config import markdown_table
from tuneforge.contract import METRIC_DEFINITIONS

REPO = Path(__file__).resolve().parents[2]


def test_hyperparameter_reference_is_current():
    text = (REPO / "docs" / "hyperparameters.md").read_text()
    assert markdown_table() in text, "run `make docs` to regenerate docs/hyperparameters.md"


def test_readme_opens_with_the_two_commands_and_lists_metric_regexes():
    readme = (REPO / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[:2] for line in block] == [["make", "demo"], ["make", "test"]]
    for definition in METRIC_DEFINITIONS:
        if "final_rouge" in definition["Regex"] and "rouge1" not in definition["Regex"]:
            continue  # listed as "(and so on)"
        assert definition["Regex"] in readme, definition
