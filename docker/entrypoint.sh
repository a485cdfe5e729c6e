#!/bin/sh
# Entry point of both tuneforge images. SageMaker starts a container as `docker run IMAGE train`
# or `docker run IMAGE serve`; this script runs the matching console script with exec, so that it
# becomes PID 1 and gets SIGTERM directly (no tini, no shell left in between).
#   train  -> `train` from sagemaker-training, which calls $SAGEMAKER_TRAINING_MODULE
#             (tuneforge.recipes:main); any further arguments are ignored, as SageMaker does.
#   serve  -> `serve`, tuneforge's gunicorn server on 8080 (or $SAGEMAKER_BIND_TO_PORT).
#   other  -> run as given, e.g. `docker run IMAGE tuneforge hyperparameters` or `... bash`.
set -eu
case "${1:-}" in
    train)
        command -v train >/dev/null || { echo "this image cannot train; use the tuneforge-train image" >&2; exit 2; }
        # sagemaker-training reads hyperparameters.json before tuneforge runs: check the config
        # files first, so a bad one fails with tuneforge's message in output/failure.
        if command -v tuneforge >/dev/null; then tuneforge check-job || exit $?; fi
        exec train ;;
    serve)
        shift
        command -v serve >/dev/null || { echo "this image cannot serve; use the tuneforge-serve image" >&2; exit 2; }
        exec serve "$@" ;;
    "")
        echo "usage: IMAGE train | IMAGE serve | IMAGE COMMAND [ARGS...]" >&2
        exit 2 ;;
    *)
        exec "$@" ;;
esac
