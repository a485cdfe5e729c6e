"""vLLM as the instance's one generation engine: choose it, start it beside gunicorn, stop it with it.

`serve` (the gunicorn master) decides once per instance which engine generates (`choose_engine`):
vLLM wherever it can serve the model, else the transformers engine in each worker. For vLLM it
starts vLLM's OpenAI server from vLLM's own virtual environment on a loopback port
(`EngineProcess`); the workers keep the SageMaker routes, the payload formats and the prompt
rendering, and send the engine token ids (vllm_engine.py). So there is one KV cache and one
scheduler per instance however many HTTP workers there are.

The engine leads its own process group (a Ctrl-C to the terminal's group reaches gunicorn, which
then stops the engine after its workers finish) but stays in the master's session: a new session
is a new scheduler autogroup on Linux, and vLLM's busy processes in an autogroup of their own took
both CPUs of a small machine from the HTTP workers for seconds at a time (/ping at 2-6 s).
It dies with the master (PR_SET_PDEATHSIG), and the master stops when the engine dies.
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ..model_folder import CONFIG_FILE
from .settings import ServeSettings

SERVED_NAME = "tuneforge"  # the model name the workers use with the engine; clients never see it
ADAPTER_NAME = "tuneforge-adapter"  # an adapter-only folder's LoRA, by name, on the base model
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM takes as --max-lora-rank
PLUGIN_DIR = Path(__file__).parent / "vllm_plugin"  # on the engine's PYTHONPATH: modules vLLM imports
NGRAM_PROCESSOR = "tuneforge_vllm_ngram:NoRepeatNGram"  # no_repeat_ngram_size (per request, vllm_xargs)
VLLM_PYTHONS = (Path("/opt/vllm/bin/python"), Path(sys.prefix) / "vllm" / "bin" / "python")
TCMALLOC = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4")
KV_CACHE_SHARE = 0.25  # of the machine's memory, less the weights, for the KV cache on CPU
KV_CACHE_BOUNDS_GB = (1, 64)
PROBE_TIMEOUT_S = 180
STOP_GRACE_S = 15

# What vLLM says about itself and this machine, printed as JSON by vLLM's own Python.
PROBE = """
import json, sys
import torch
import vllm
from vllm.model_executor.models import ModelRegistry
facts = {"version": vllm.__version__, "archs": sorted(ModelRegistry.get_supported_archs()),
         "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
         "cpu": torch.backends.cpu.get_cpu_capability()}
if not facts["gpus"]:
    import logging
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("vllm").addHandler(handler)
    current_platform.import_kernels()  # the CPU kernels' library (it needs libnuma, for one)
    if not hasattr(torch.ops._C, "init_cpu_memory_env"):
        sys.exit("its CPU kernels do not load: " + ("; ".join(warnings) or "no reason given")[:300])
    facts["head_sizes"] = list(CPUAttentionBackend.get_supported_head_sizes())
    # torch.compile (inductor) builds the model's CPU kernels as C++ against Python's headers
    import os, shutil, sysconfig
    facts["compiler"] = shutil.which("g++") or shutil.which("c++")
    facts["python_headers"] = os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
print(json.dumps(facts))
"""


@dataclass(frozen=True)
class EngineChoice:
    name: str  # "vllm" | "transformers"
    reason: str
    python: Path | None = None
    gpus: int = 0


def choose_engine(settings: ServeSettings, info) -> EngineChoice:
    """The engine for this model folder, and why; SERVING_ENGINE=vllm fails when vLLM cannot serve it."""
    if settings.serving_engine == "transformers":
        return EngineChoice("transformers", "SERVING_ENGINE=transformers")
    python, facts = vllm_python(settings), {}
    why_not = _model_obstacle(info)
    if why_not is None and python is None:
        why_not = ("vLLM is not installed (no /opt/vllm/bin/python or <venv>/vllm/bin/python; "
                   "TUNEFORGE_VLLM_PYTHON names another)")
    if why_not is None:
        facts, why_not = probe(python)
    if why_not is None:
        why_not = _machine_obstacle(facts, info, settings)
    if why_not is None:
        where = f"{facts['gpus']} GPU(s)" if facts["gpus"] else f"CPU ({facts['cpu']})"
        return EngineChoice("vllm", f"vLLM {facts['version']} serves {_architecture(info)} on {where}", python,
                            facts["gpus"])
    if settings.serving_engine == "vllm":
        raise ModelError(f"SERVING_ENGINE=vllm, but {why_not}",
                         fix="set SERVING_ENGINE=auto or transformers to serve with the transformers engine")
    return EngineChoice("transformers", f"SERVING_ENGINE=auto and {why_not}")


def vllm_python(settings: ServeSettings) -> Path | None:
    candidates = [Path(settings.vllm_python)] if settings.vllm_python else list(VLLM_PYTHONS)
    return next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def probe(python: Path) -> tuple[dict, str | None]:
    """vLLM's version, architectures and what it can use here; (facts, None) or ({}, why not)."""
    try:
        done = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              env=_clean_environment())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {}, f"vLLM could not be asked what it supports ({exc})"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {}, f"vLLM does not load here ({last[:300]})"
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def _config(info) -> dict:
    weights_dir = info.base_dir if info.adapter_only else info.model_dir
    return json.loads((Path(weights_dir) / CONFIG_FILE).read_text())


def _architecture(info) -> str:
    return (_config(info).get("architectures") or ["an unnamed architecture"])[0]


def _model_obstacle(info) -> str | None:
    config = _config(info)
    if config.get("is_encoder_decoder") or info.metadata.architecture == "seq2seq":
        return "vLLM does not serve encoder-decoder models such as T5"
    return _adapters_obstacle(info)


def lora_name(adapter: str) -> str:
    """The engine's name for adapters/<adapter> (apart from the engine's other model names)."""
    return f"tuneforge-lora-{adapter}"


def _lora_folders(info) -> dict[str, Path]:
    """The LoRAs vLLM loads, by the engine's names: an adapter-only folder's, or adapters/."""
    if info.adapter_only:
        return {ADAPTER_NAME: Path(info.model_dir)}
    return {lora_name(name): folder for name, folder in info.adapters.items()}


def adapter_config(folder: Path) -> dict:
    return json.loads((Path(folder) / "adapter_config.json").read_text())


def _adapters_obstacle(info) -> str | None:
    for folder in _lora_folders(info).values():
        why_not = _adapter_obstacle(folder)
        if why_not is not None:
            return why_not if info.adapter_only else f"{folder}: {why_not}"
    return None


def _adapter_obstacle(folder: Path) -> str | None:
    """What keeps vLLM's LoRA from serving an adapter (then: merge_weights=True, or the
    transformers engine)."""
    config = adapter_config(folder)
    kind = config.get("peft_type", "LORA")
    if kind != "LORA":
        return f"the folder holds a {kind} adapter, and vLLM serves LoRA adapters only"
    if config.get("use_dora"):
        return "the folder holds a DoRA adapter, which vLLM does not serve"
    if int(config.get("r", 8)) > LORA_RANKS[-1]:
        return f"the adapter's rank {config['r']} is above vLLM's largest ({LORA_RANKS[-1]})"
    whole = sorted(set(config.get("modules_to_save") or []) | _whole_modules(Path(folder)))
    if whole:
        return (f"the adapter carries whole modules beside its LoRA weights ({', '.join(whole)}: e.g. embeddings "
                "resized for added tokens), which vLLM's LoRA does not load")
    return None


def _whole_modules(adapter_dir: Path) -> set[str]:
    """Modules saved in full in the adapter's weights (PEFT saves resized embeddings that way)."""
    from safetensors import safe_open

    path = adapter_dir / "adapter_model.safetensors"
    if not path.exists():
        return set()
    with safe_open(str(path), framework="numpy") as weights:
        return {name.split(".")[-2] for name in weights.keys() if "lora_" not in name}


def head_size(config: dict) -> int | None:
    heads = config.get("num_attention_heads") or config.get("n_head") or config.get("num_heads")
    hidden = config.get("hidden_size") or config.get("n_embd") or config.get("d_model")
    return config.get("head_dim") or (hidden // heads if hidden and heads else None)


def _machine_obstacle(facts: dict, info, settings: ServeSettings) -> str | None:
    arch = _architecture(info)
    if arch not in facts["archs"]:
        return f"vLLM {facts['version']} has no {arch}"
    if facts["gpus"] or settings.device.startswith("cuda"):
        return None if facts["gpus"] else "TUNEFORGE_DEVICE asks for CUDA and vLLM sees no GPU"
    if facts["cpu"] not in ("AVX2", "AVX512"):
        return f"vLLM's CPU kernels need AVX2 or AVX-512 and this CPU offers {facts['cpu']}"
    if not facts.get("compiler") or not facts.get("python_headers"):
        return ("vLLM compiles its CPU kernels with torch.compile, which needs g++ and Python's headers "
                "(apt-get install g++ python3-dev)")
    size = head_size(_config(info))
    if size not in facts.get("head_sizes", [size]):
        return f"vLLM's CPU attention takes head sizes {facts['head_sizes']}, and this model's is {size}"
    return None


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors")) or sum(
        p.stat().st_size for p in Path(folder).glob("*.bin"))


def kv_cache_gb(settings: ServeSettings, weights_dir: Path) -> int:
    """TUNEFORGE_KV_CACHE_GB, else a quarter of the machine's memory less the weights, in whole GiB
    within bounds (vLLM reads VLLM_CPU_KVCACHE_SPACE as an integer)."""
    if settings.kv_cache_gb:
        return settings.kv_cache_gb
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    share = (KV_CACHE_SHARE * total - weights_bytes(weights_dir)) / 2**30
    low, high = KV_CACHE_BOUNDS_GB
    return int(min(max(share, low), high))


def engine_command(settings: ServeSettings, info, choice: EngineChoice, port: int) -> list[str]:
    weights_dir = info.base_dir if info.adapter_only else info.model_dir
    command = [str(choice.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(weights_dir),
               "--served-model-name", SERVED_NAME,
               "--host", "127.0.0.1", "--port", str(port), "--dtype", settings.dtype,
               "--uvicorn-log-level", "warning", "--max-logprobs", "100", "--logits-processors", NGRAM_PROCESSOR]
    if choice.gpus > 1:  # one model over the instance's GPUs, not one copy per GPU
        command += ["--tensor-parallel-size", str(choice.gpus)]
    if choice.gpus:
        command += ["--gpu-memory-utilization", str(settings.gpu_memory_utilization)]
    if "max_batch_size" in settings.model_fields_set:
        command += ["--max-num-seqs", str(settings.max_batch_size)]
    if settings.max_input_tokens:
        command += ["--max-model-len", str(settings.max_input_tokens + settings.max_new_tokens)]
    if settings.trust_remote_code:
        command.append("--trust-remote-code")
    loras = _lora_folders(info)
    if loras:  # the base once, each adapter applied per request by name (vLLM's LoRA)
        largest = max(int(adapter_config(folder).get("r", 8)) for folder in loras.values())
        # One slot more than adapters: vLLM's CPU LoRA ops index a request without adapter (-1)
        # into the slots as Python does, i.e. the last slot, which must then stay empty (zeros).
        command += ["--enable-lora", "--max-loras", str(len(loras) + 1),
                    "--max-lora-rank", str(next(r for r in LORA_RANKS if r >= largest)),
                    "--lora-modules", *(f"{name}={folder}" for name, folder in loras.items())]
    return command + shlex.split(settings.vllm_args)


def _clean_environment() -> dict:
    """This process's environment without what belongs to tuneforge's own Python and metrics."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PROMETHEUS_MULTIPROC_DIR", "LD_PRELOAD")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    return env


def engine_environment(settings: ServeSettings, info, choice: EngineChoice) -> dict:
    env = dict(_clean_environment(), PYTHONPATH=str(PLUGIN_DIR))
    if not choice.gpus:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gb(settings, info.base_dir if info.adapter_only
                                                         else info.model_dir))
        # vLLM's CPU guide: tcmalloc and Intel's OpenMP preloaded (several times faster here).
        omp = choice.python.parent.parent / "lib" / "libiomp5.so"
        preload = [p for p in TCMALLOC if Path(p).exists()][:1] + ([str(omp)] if omp.exists() else [])
        if preload:
            env["LD_PRELOAD"] = ":".join(preload)
    return env


def _die_with_parent() -> None:
    """In the child before exec: its own process group, and SIGTERM when the master dies."""
    os.setpgid(0, 0)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EngineProcess:
    """vLLM's server as a child of the gunicorn master."""

    def __init__(self, settings: ServeSettings, info, choice: EngineChoice):
        self.settings, self.info, self.choice = settings, info, choice
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.owner = os.getpid()
        self.stopping = False
        self.died: int | None = None  # exit status when the engine ended on its own

    def start(self) -> str:
        command = engine_command(self.settings, self.info, self.choice, self.port)
        env = engine_environment(self.settings, self.info, self.choice)
        cache = f"KV cache {env['VLLM_CPU_KVCACHE_SPACE']} GiB" if "VLLM_CPU_KVCACHE_SPACE" in env else "on GPU"
        print(f"serve: starting vLLM on {self.url} ({cache}): {shlex.join(command)}", file=sys.stderr, flush=True)
        self.proc = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL)
        return self.url

    def watch(self, on_death) -> None:
        """Call on_death(status) from a thread if the engine exits before stop()."""

        def wait():
            status = self.proc.wait()
            if not self.stopping:
                self.died = status
                on_death(status)

        threading.Thread(target=wait, name="tuneforge-vllm-watch", daemon=True).start()

    def stop(self) -> None:
        """SIGTERM to the engine's process group, SIGKILL to what is left after the grace period.

        Only in the master: a gunicorn worker is a fork that leaves through the same stack frames.
        """
        if self.proc is None or os.getpid() != self.owner:
            return
        self.stopping = True
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:  # every process of the group has exited
        pass


def wait_healthy(url: str, timeout: float, interval: float = 0.5) -> None:
    """Block until the engine answers /health with 200; raises after `timeout` seconds."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    end = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > end:
            raise TimeoutError(f"vLLM did not become healthy within {timeout:g} s (TUNEFORGE_VLLM_START_TIMEOUT)")
        time.sleep(interval)
