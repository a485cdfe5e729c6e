#!/usr/bin/env bash
# Run a tuneforge training job locally with docker or podman, laid out as SageMaker lays it out.
#
#   scripts/local-train.sh --data DIR [--validation DIR] [--model DIR] [--run-dir DIR]
#                          [--image IMAGE] [--engine docker|podman] [--gpus] [--dry-run] [KEY=VALUE ...]
#
#   --data DIR        training data, mounted read-only as /opt/ml/input/data/training
#   --validation DIR  optional validation data  -> /opt/ml/input/data/validation
#   --model DIR       base model folder (weights + tokenizer) -> /opt/ml/input/data/model
#   --run-dir DIR     the host side of /opt/ml (default ./tuneforge-run): input/config/*.json are
#                     written there, and the job writes model/, output/ and checkpoints/ there
#   --image IMAGE     default tuneforge-train:local (what scripts/build-images.sh tags)
#   --engine NAME     docker or podman (default: docker if installed, else podman)
#   --gpus            give the container every GPU (docker: --gpus all; podman: --device
#                     nvidia.com/gpu=all, which needs the NVIDIA CDI spec from nvidia-ctk)
#   --dry-run         lay out the run folder and print the command instead of running it
#   KEY=VALUE         hyperparameters, written as strings to input/config/hyperparameters.json
#                     exactly as SageMaker's CreateTrainingJob passes them (e.g. epoch=1 max_steps=20)
set -euo pipefail

IMAGE=${TUNEFORGE_TRAIN_IMAGE:-tuneforge-train:local}
ENGINE=${TUNEFORGE_ENGINE:-}
RUN_DIR=./tuneforge-run
DATA="" VALIDATION="" MODEL="" GPUS=0 DRY_RUN=0
HYPERPARAMETERS=()

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
die() { printf 'local-train.sh: %s\n' "$*" >&2; exit 2; }
absdir() { [ -d "$1" ] || die "$2 $1 is not a folder"; (cd "$1" && pwd); }

while [ $# -gt 0 ]; do
    case "$1" in
        --data) DATA=$(absdir "$2" --data); shift 2 ;;
        --validation) VALIDATION=$(absdir "$2" --validation); shift 2 ;;
        --model) MODEL=$(absdir "$2" --model); shift 2 ;;
        --run-dir) RUN_DIR=$2; shift 2 ;;
        --image) IMAGE=$2; shift 2 ;;
        --engine) ENGINE=$2; shift 2 ;;
        --gpus) GPUS=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *=*) HYPERPARAMETERS+=("$1"); shift ;;
        *) die "expected KEY=VALUE, got $1" ;;
    esac
done
[ -n "$DATA" ] || die "--data DIR is required (see --help)"

if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null; then ENGINE=docker
    elif command -v podman >/dev/null; then ENGINE=podman
    elif [ "$DRY_RUN" = 1 ]; then ENGINE=docker
    else die "neither docker nor podman is installed"
    fi
fi

# The host side of /opt/ml. Channels are bind-mounted over input/data/<name>, read-only.
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
mkdir -p "$RUN_DIR/input/config" "$RUN_DIR/model" "$RUN_DIR/output" "$RUN_DIR/checkpoints"
CHANNELS=(training)
[ -n "$VALIDATION" ] && CHANNELS+=(validation)
[ -n "$MODEL" ] && CHANNELS+=(model)
for channel in "${CHANNELS[@]}"; do mkdir -p "$RUN_DIR/input/data/$channel"; done

python3 - "$RUN_DIR/input/config" "${#CHANNELS[@]}" "${CHANNELS[@]}" "${HYPERPARAMETERS[@]}" <<'PY'
import json, sys
from pathlib import Path

config, n = Path(sys.argv[1]), int(sys.argv[2])
channels, pairs = sys.argv[3:3 + n], sys.argv[3 + n:]
# SageMaker passes every hyperparameter as a string; so does this file.
hps = dict(pair.split("=", 1) for pair in pairs)
(config / "hyperparameters.json").write_text(json.dumps(hps, indent=2) + "\n")
# One host. The container runs with --hostname algo-1, so the name resolves as on SageMaker.
(config / "resourceconfig.json").write_text(json.dumps(
    {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}, indent=2) + "\n")
(config / "inputdataconfig.json").write_text(json.dumps(
    {c: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
     for c in channels}, indent=2) + "\n")
PY

CMD=("$ENGINE" run --rm --hostname algo-1 --shm-size 2g
     -v "$RUN_DIR:/opt/ml"
     -v "$DATA:/opt/ml/input/data/training:ro")
[ -n "$VALIDATION" ] && CMD+=(-v "$VALIDATION:/opt/ml/input/data/validation:ro")
[ -n "$MODEL" ] && CMD+=(-v "$MODEL:/opt/ml/input/data/model:ro")
if [ "$GPUS" = 1 ]; then
    # docker: the NVIDIA runtime's --gpus; podman: the CDI device nvidia-ctk generates.
    if [ "$(basename "$ENGINE")" = podman ]; then CMD+=(--device nvidia.com/gpu=all); else CMD+=(--gpus all); fi
fi
CMD+=("$IMAGE" train)

if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "${CMD[@]}"; echo
    exit 0
fi
echo "+ ${CMD[*]}" >&2
status=0
"${CMD[@]}" || status=$?
if [ "$status" != 0 ]; then
    echo "local-train.sh: the job failed (exit $status)" >&2
    [ -s "$RUN_DIR/output/failure" ] && head -3 "$RUN_DIR/output/failure" >&2
    exit "$status"
fi
echo "model written to $RUN_DIR/model; metrics and reports in $RUN_DIR/output/data"
