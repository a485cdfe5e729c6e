"""One lock: constraints.txt pins the dev environment, the image locks are subsets of it, and the
set-up really installed the pinned versions (scripts/lock-requirements.sh refreshes all three)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pins(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9._-]+==[A-Za-z0-9.+!-]+", line) for line in lines), lines
    return dict(line.split("==") for line in lines)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_lock_pins_every_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    missing = {_name(r) for r in declared} - set(pins(REPO / "constraints.txt"))
    assert not missing, f"constraints.txt lacks {missing}: run scripts/lock-requirements.sh"


@pytest.mark.parametrize("kind", ["train", "serve"])
def test_image_locks_are_subsets_of_the_dev_lock(kind):
    dev, image = pins(REPO / "constraints.txt"), pins(REPO / "docker" / f"requirements-{kind}.txt")
    drift = {name: (version, dev.get(name)) for name, version in image.items() if dev.get(name) != version}
    assert not drift, f"requirements-{kind}.txt differs from constraints.txt: {drift}"


def test_the_environment_runs_the_locked_versions():
    installed = {d.metadata["Name"].lower().replace("_", "-"): d.version for d in importlib.metadata.distributions()}
    wrong = {name: (version, installed.get(name)) for name, version in pins(REPO / "constraints.txt").items()
             if installed.get(name, "").split("+")[0] != version}
    assert not wrong, f"installed versions differ from constraints.txt (run `make setup`): {wrong}"
