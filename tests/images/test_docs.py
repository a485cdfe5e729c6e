"""docs/deploy.md and docs/images.md match the code: snippets parse, named options exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = (REPO / "docs" / "deploy.md").read_text()
IMAGES = (REPO / "docs" / "images.md").read_text()


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_yaml_snippets_parse():
    docs = [d for block in blocks(DEPLOY, "yaml") for d in yaml.safe_load_all(block) if d]
    kinds = {d.get("kind") for d in docs}
    assert {"Job", "Service"} <= kinds
    job = next(d for d in docs if d.get("kind") == "Job")
    mounts = {m["mountPath"] for m in job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert {"/opt/ml", "/opt/ml/input/data/training", "/opt/ml/input/data/model", "/opt/ml/model"} <= mounts


def test_embedded_python_of_the_multi_node_job_writes_a_valid_resourceconfig(tmp_path):
    block = next(b for b in blocks(DEPLOY, "yaml") if "completionMode: Indexed" in b)
    script = re.search(r"python3 - <<'EOF'\n(.*?)\n\s*EOF", block, re.S).group(1)
    script = "\n".join(line[10:] for line in script.splitlines())  # the YAML block's indentation
    script = script.replace("/opt/ml/input/config/resourceconfig.json", str(tmp_path / "rc.json"))
    env = {"NODES": "3", "JOB_COMPLETION_INDEX": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    import json

    rc = json.loads((tmp_path / "rc.json").read_text())
    assert rc["current_host"] in rc["hosts"] and rc["hosts"] == sorted(rc["hosts"]) and len(rc["hosts"]) == 3


@pytest.mark.parametrize("doc", ["deploy", "images"])
def test_bash_snippets_are_valid_bash(doc, tmp_path):
    text = DEPLOY if doc == "deploy" else IMAGES
    for i, block in enumerate(blocks(text, "bash")):
        path = tmp_path / f"{doc}-{i}.sh"
        path.write_text(block)
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{doc}.md bash block {i}: {result.stderr}\n{block}"


def test_options_named_in_the_docs_exist():
    helps = {
        "sagemaker_launch.py": "".join(
            subprocess.run([sys.executable, str(REPO / "scripts/sagemaker_launch.py"), sub, "--help"],
                           capture_output=True, text=True).stdout for sub in ("train", "deploy", "predict")),
        "local-train.sh": subprocess.run(["bash", str(REPO / "scripts/local-train.sh"), "--help"],
                                         capture_output=True, text=True).stdout,
        "local-serve.sh": subprocess.run(["bash", str(REPO / "scripts/local-serve.sh"), "--help"],
                                         capture_output=True, text=True).stdout,
        "build-images.sh": subprocess.run(["bash", str(REPO / "scripts/build-images.sh"), "--help"],
                                          capture_output=True, text=True).stdout,
    }
    named = {
        "sagemaker_launch.py": ["--image-uri", "--role", "--training", "--validation", "--model", "--output-path",
                                "--checkpoint-s3-uri", "--instance-type", "--instance-count", "--wait", "--spot",
                                "--uncompressed-output", "--model-data", "--endpoint-name", "--startup-timeout",
                                "--prompt", "--dry-run"],
        "local-train.sh": ["--data", "--validation", "--model", "--run-dir", "--gpus", "--dry-run"],
        "local-serve.sh": ["--model", "--port", "--dry-run"],
        "build-images.sh": ["--base", "--no-smoke", "--smoke-only", "--base-only"],
    }
    for script, options in named.items():
        for option in options:
            assert option in DEPLOY + IMAGES, f"{option} is not documented"
            assert option in helps[script], f"docs name {script} {option}, which it does not have"


def test_documented_defaults_match_the_dockerfiles():
    for name in ("Dockerfile.train", "Dockerfile.serve"):
        base = re.search(r"^ARG BASE_IMAGE=(\S+)", (REPO / name).read_text(), re.M).group(1)
        assert f"`{base}`" in IMAGES
    assert "SAGEMAKER_BIND_TO_PORT" in DEPLOY and "7777" in DEPLOY
    from tuneforge.job.launcher import DEFAULT_MASTER_PORT

    assert DEFAULT_MASTER_PORT == 7777
