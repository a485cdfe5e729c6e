"""Fixture model folders and real `serve` processes (gunicorn) on free loopback ports.

One server per model folder for the whole session keeps the suite fast; tests that stop or
overload a server start their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tuneforge.data.prompt import DEMARCATION_KEY, DOLLY_TEMPLATE, PromptFormat

HOST = "127.0.0.1"
# TUNEFORGE_TEST_ENGINE=vllm runs this whole suite with the instruct model on vLLM: SERVING_ENGINE=auto
# everywhere (the folders vLLM cannot serve fall back) and that model built with head size 32.
TEST_ENGINE = os.environ.get("TUNEFORGE_TEST_ENGINE", "transformers")
ENGINE_ENV = ({"SERVING_ENGINE": "auto", "TUNEFORGE_DTYPE": "float32", "TUNEFORGE_KV_CACHE_GB": "1"}
              if TEST_ENGINE == "vllm" else {"SERVING_ENGINE": "transformers"})
START_TIMEOUT = 540 if TEST_ENGINE == "vllm" else 180  # vLLM takes a minute or more to start
INSTRUCT_BASE = "llama_hd32" if TEST_ENGINE == "vllm" else "llama"  # the instruct model's and the adapter's base


_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now and never handed to another server of this session (servers that load in
    parallel each pick one before any of them binds)."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port


def instruction_format() -> PromptFormat:
    return PromptFormat(kind="instruction", prompt_template=DOLLY_TEMPLATE["prompt"],
                        completion_template=DOLLY_TEMPLATE["completion"], demarcation=DEMARCATION_KEY)


def write_metadata(folder: Path, **overrides) -> None:
    metadata = {"format_version": 1, "architecture": "causal", "base_model": "tiny-llama", "adapter_only": False,
                "base_model_path": None, "data_format": "instruction", "prompt": instruction_format().to_dict(),
                "max_input_length": 256, "hyperparameters": {}, "metrics": {}}
    metadata.update(overrides)
    (folder / "tuneforge.json").write_text(json.dumps(metadata))


class Server:
    """`python -m tuneforge.serve.server` in a subprocess, its log in a file."""

    def __init__(self, model_dir: Path, log_path: Path, env: dict | None = None, args: tuple = ()):
        self.port = free_port()
        self.model_dir = model_dir
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        self.ping_statuses: list[int] = []
        # The transformers engine unless a test (tests/serve/test_vllm.py) or TUNEFORGE_TEST_ENGINE asks
        full_env = dict(os.environ, TUNEFORGE_TORCH_THREADS="1", TOKENIZERS_PARALLELISM="false",
                        HF_HUB_OFFLINE="1", TUNEFORGE_ACCESS_LOG="-", **ENGINE_ENV)
        full_env.update(env or {})
        full_env.pop("SAGEMAKER_BIND_TO_PORT", None)
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tuneforge.serve.server", "--model-dir", str(model_dir), "--host", HOST,
             "--port", str(self.port), *args], env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def listening(self) -> bool:
        return f"Listening at: http://{HOST}:{self.port} " in self.log()

    def poll_ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        if not self.listening():  # whatever answers before that on this port is some other process
            return False
        try:
            status = requests.get(self.url + "/ping", timeout=2).status_code
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy loading on a small machine
            return False
        self.ping_statuses.append(status)
        return status == 200

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "Server":
        end = time.monotonic() + timeout
        while not self.poll_ready():
            if time.monotonic() > end:
                raise AssertionError(f"server not ready after {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        return self

    def post(self, path: str = "/invocations", json=None, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        return requests.post(self.url + path, json=json, **kwargs)

    def generate(self, inputs, **parameters) -> dict:
        """TGI request with details; the single answer object."""
        response = self.post(json={"inputs": inputs, "parameters": dict(parameters, details=True)})
        assert response.status_code == 200, response.text
        return response.json()[0]

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@contextmanager
def running(model_dir: Path, log_dir: Path, env: dict | None = None):
    """A server of its own for a test module: started, ready, stopped at the end."""
    server = Server(model_dir, log_dir / "serve.log", env=env)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def start_all(servers: list[Server]) -> None:
    """Wait for several servers that load in parallel, polling each so every 503 is seen."""
    end = time.monotonic() + START_TIMEOUT
    pending = list(servers)
    while pending:
        pending = [s for s in pending if not s.poll_ready()]
        if pending and time.monotonic() > end:
            raise AssertionError(f"server not ready after {START_TIMEOUT} s:\n{pending[0].log()[-3000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, tiny) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-models")
    dirs = {}
    # A trained instruction model: tiny llama weights + the Dolly template in tuneforge.json.
    dirs["instruct"] = root / "instruct"
    shutil.copytree(tiny(INSTRUCT_BASE), dirs["instruct"])
    write_metadata(dirs["instruct"])
    # A plain HF seq2seq folder (no tuneforge.json): raw prompts, architecture from config.json.
    dirs["t5"] = root / "t5"
    shutil.copytree(tiny("t5"), dirs["t5"])
    # A plain HF causal folder with a long context, for requests that must take seconds.
    dirs["long"] = root / "long"
    shutil.copytree(tiny("llama"), dirs["long"])
    config = json.loads((dirs["long"] / "config.json").read_text())
    config["max_position_embeddings"] = 4096
    (dirs["long"] / "config.json").write_text(json.dumps(config))
    dirs["adapter"] = make_adapter(root / "adapter", tiny(INSTRUCT_BASE))
    return dirs


def make_adapter(folder: Path, base: Path, seed: int = 3, rank: int = 8) -> Path:
    """A LoRA adapter with non-zero weights (so it changes the output), saved adapter-only."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = LoraConfig(r=rank, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    write_metadata(folder, adapter_only=True, base_model_path=str(base))
    return folder


# A chat template that renders tools and tool calls (the Hermes / Qwen 2.5 convention).
TOOLS_CHAT_TEMPLATE = (
    "{%- if tools %}<|system|>\nYou may call these tools:\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "Answer a call as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>{{ eos_token }}\n{% endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}<|assistant|>\n"
    "{% for call in message.tool_calls %}<tool_call>{\"name\": \"{{ call.function.name }}\", \"arguments\": "
    "{{ call.function.arguments | tojson }}}</tool_call>{% endfor %}{{ eos_token }}\n"
    "{%- elif message.role == 'tool' %}<|tool|>\n<tool_response>{{ message.content }}</tool_response>{{ eos_token }}\n"
    "{%- else %}<|{{ message.role }}|>\n{{ message.content }}{{ eos_token }}\n{% endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="session")
def chat_server(tiny, tmp_path_factory):
    """A plain HF folder (no tuneforge.json) whose tokenizer carries a tools-aware chat template."""
    folder = tmp_path_factory.mktemp("serve-chat") / "chat"
    shutil.copytree(tiny("llama"), folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = TOOLS_CHAT_TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    model_config = json.loads((folder / "config.json").read_text())
    model_config["max_position_embeddings"] = 2048  # tool lists take many tokens of the tiny vocabulary
    (folder / "config.json").write_text(json.dumps(model_config))
    server = Server(folder, tmp_path_factory.mktemp("serve-chat-log") / "chat.log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def servers(model_dirs, tmp_path_factory):
    logs = tmp_path_factory.mktemp("serve-logs")
    started = {name: Server(model_dirs[name], logs / f"{name}.log") for name in ("instruct", "t5", "adapter")}
    try:
        start_all(list(started.values()))
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="session")
def causal(servers) -> Server:
    return servers["instruct"]


@pytest.fixture(scope="session")
def seq2seq(servers) -> Server:
    return servers["t5"]


@pytest.fixture(scope="session")
def adapter_server(servers) -> Server:
    return servers["adapter"]
