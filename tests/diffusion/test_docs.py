"""The text-to-image docs match the code."""

import re
from pathlib import Path

from tuneforge.diffusion.config import FIELDS, markdown_table

REPO = Path(__file__).resolve().parents[2]


def test_hyperparameter_reference_is_current():
    text = (REPO / "docs" / "hyperparameters.md").read_text()
    assert markdown_table() in text, "run `tuneforge hyperparameters --markdown > docs/hyperparameters.md`"


def test_guide_names_only_real_hyperparameters():
    guide = (REPO / "docs" / "diffusion.md").read_text()
    example = re.search(r'hyperparameters = \{(.*?)\}', guide, re.S).group(1)
    names = re.findall(r'"(\w+)":', example)
    assert names and all(name in FIELDS for name in names), names
