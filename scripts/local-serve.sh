#!/usr/bin/env bash
# Serve a model folder locally with the tuneforge serve image, as a SageMaker endpoint would.
#
#   scripts/local-serve.sh --model DIR [--port 8080] [--image IMAGE] [--engine docker|podman]
#                          [--gpus] [--dry-run] [KEY=VALUE ...]
#
#   --model DIR       a trained model folder (e.g. tuneforge-run/model), mounted read-only as
#                     /opt/ml/model, where SageMaker unpacks model.tar.gz
#   --port N          host port published to the container's 8080 (default 8080)
#   --image IMAGE     default tuneforge-serve:local (what scripts/build-images.sh tags)
#   --engine NAME     docker or podman (default: docker if installed, else podman)
#   --gpus            give the container every GPU (docker: --gpus all; podman: --device
#                     nvidia.com/gpu=all, which needs the NVIDIA CDI spec from nvidia-ctk)
#   --dry-run         print the command instead of running it
#   KEY=VALUE         environment for the server, as a SageMaker Model's `env` sets it
#
# Then: curl -s localhost:8080/ping
#       curl -s localhost:8080/invocations -H 'Content-Type: application/json' \
#            -d '{"inputs": "What color is the lime?", "parameters": {"max_new_tokens": 16}}'
set -euo pipefail

IMAGE=${TUNEFORGE_SERVE_IMAGE:-tuneforge-serve:local}
ENGINE=${TUNEFORGE_ENGINE:-}
PORT=8080
MODEL="" GPUS=0 DRY_RUN=0
ENVIRONMENT=()

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
die() { printf 'local-serve.sh: %s\n' "$*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --model) [ -d "$2" ] || die "--model $2 is not a folder"; MODEL=$(cd "$2" && pwd); shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --image) IMAGE=$2; shift 2 ;;
        --engine) ENGINE=$2; shift 2 ;;
        --gpus) GPUS=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *=*) ENVIRONMENT+=(-e "$1"); shift ;;
        *) die "expected KEY=VALUE, got $1" ;;
    esac
done
[ -n "$MODEL" ] || die "--model DIR is required (see --help)"
case "$PORT" in ''|*[!0-9]*) die "--port wants a number, got $PORT" ;; esac
[ -e "$MODEL/config.json" ] || [ -e "$MODEL/adapter_config.json" ] \
    || echo "local-serve.sh: warning: $MODEL has no config.json or adapter_config.json" >&2

if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null; then ENGINE=docker
    elif command -v podman >/dev/null; then ENGINE=podman
    elif [ "$DRY_RUN" = 1 ]; then ENGINE=docker
    else die "neither docker nor podman is installed"
    fi
fi

CMD=("$ENGINE" run --rm -p "$PORT:8080" -v "$MODEL:/opt/ml/model:ro")
CMD+=(${ENVIRONMENT[@]+"${ENVIRONMENT[@]}"})
if [ "$GPUS" = 1 ]; then
    # docker: the NVIDIA runtime's --gpus; podman: the CDI device nvidia-ctk generates.
    if [ "$(basename "$ENGINE")" = podman ]; then CMD+=(--device nvidia.com/gpu=all); else CMD+=(--gpus all); fi
fi
CMD+=("$IMAGE" serve)

if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "${CMD[@]}"; echo
    exit 0
fi
echo "+ ${CMD[*]}" >&2
exec "${CMD[@]}"
