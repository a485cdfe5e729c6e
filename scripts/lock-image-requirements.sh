#!/usr/bin/env bash
# Regenerate docker/requirements-{train,serve}.txt: the exact Python packages the images install.
#
# pip resolves the project's `train` and `serve` extras afresh (ignoring what .venv holds) under
# constraints.txt, for this machine's Python (3.11, linux x86_64, the local image's Python), and
# the full resolution is written as name==version pins. torch and tuneforge itself are left out:
# the Dockerfiles install torch in a layer of its own (CPU or CUDA build, TORCH_REQUIREMENT) and
# the package from the source tree in the last layer.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

for extra in train serve; do
    "$PY" -m pip install --quiet --dry-run --ignore-installed --report "$TMP/$extra.json" \
        -c "$REPO/constraints.txt" "$REPO[$extra]"
    "$PY" - "$TMP/$extra.json" "$extra" >"$REPO/docker/requirements-$extra.txt" <<'PY'
import json
import platform
import sys

report, extra = json.load(open(sys.argv[1])), sys.argv[2]
pins = sorted((item["metadata"]["name"].lower(), item["metadata"]["version"]) for item in report["install"])
print(f"# tuneforge[{extra}] image dependencies, pinned. Regenerate with scripts/lock-image-requirements.sh")
print(f"# (resolved under constraints.txt for Python {platform.python_version()} on linux x86_64).")
print("# torch is installed before these in a layer of its own; tuneforge itself comes last.")
for name, version in pins:
    if name not in ("torch", "tuneforge"):
        print(f"{name}=={version}")
PY
    echo "docker/requirements-$extra.txt: $(grep -c '==' "$REPO/docker/requirements-$extra.txt") pins"
done
