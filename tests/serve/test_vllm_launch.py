"""The engine choice and vLLM's command line, without starting vLLM (these run on any machine)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuneforge.errors import ModelError
from tuneforge.serve.loader import check_model_dir
from tuneforge.serve.settings import ServeSettings
from tuneforge.serve.vllm_launch import (EngineChoice, choose_engine, engine_command, engine_environment,
                                         head_size, kv_cache_gb)


def settings_for(folder: Path, **env) -> ServeSettings:
    return ServeSettings.from_env({"TUNEFORGE_MODEL_DIR": str(folder), **env})


@pytest.fixture
def llama(tiny, tmp_path) -> Path:
    folder = tmp_path / "llama"
    shutil.copytree(tiny("llama"), folder)
    return folder


def test_transformers_is_chosen_without_asking_vllm(llama):
    settings = settings_for(llama, SERVING_ENGINE="transformers", TUNEFORGE_VLLM_PYTHON="/nonexistent")
    assert choose_engine(settings, check_model_dir(settings)) == EngineChoice("transformers",
                                                                              "SERVING_ENGINE=transformers")


def test_auto_without_vllm_falls_back_and_vllm_without_it_fails(llama):
    auto = settings_for(llama, TUNEFORGE_VLLM_PYTHON="/nonexistent/python")
    choice = choose_engine(auto, check_model_dir(auto))
    assert choice.name == "transformers" and "vLLM is not installed" in choice.reason
    forced = settings_for(llama, TUNEFORGE_VLLM_PYTHON="/nonexistent/python", SERVING_ENGINE="vllm")
    with pytest.raises(ModelError, match="SERVING_ENGINE=vllm, but vLLM is not installed"):
        choose_engine(forced, check_model_dir(forced))


def test_head_size_from_the_config():
    assert head_size({"hidden_size": 64, "num_attention_heads": 4}) == 16
    assert head_size({"hidden_size": 576, "num_attention_heads": 9, "head_dim": 64}) == 64
    assert head_size({"n_embd": 64, "n_head": 2}) == 32


def test_kv_cache_from_memory_unless_set(llama):
    assert kv_cache_gb(settings_for(llama, TUNEFORGE_KV_CACHE_GB="3"), llama) == 3
    total_gb = __import__("os").sysconf("SC_PAGE_SIZE") * __import__("os").sysconf("SC_PHYS_PAGES") / 2**30
    sized = kv_cache_gb(settings_for(llama), llama)
    assert isinstance(sized, int) and 1 <= sized <= 64  # vLLM takes whole GiB
    assert sized == int(min(max(total_gb / 4, 1), 64))  # the tiny weights weigh nothing


def test_engine_command_and_environment(llama):
    settings = settings_for(llama, TUNEFORGE_MAX_BATCH_SIZE="8", TUNEFORGE_VLLM_ARGS="--enforce-eager --seed 3",
                            TUNEFORGE_KV_CACHE_GB="2")
    info = check_model_dir(settings)
    cpu = EngineChoice("vllm", "", Path("/opt/vllm/bin/python"), gpus=0)
    command = engine_command(settings, info, cpu, 8123)
    assert command[:3] == ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--model") + 1] == str(llama)
    assert command[command.index("--port") + 1] == "8123" and command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--max-num-seqs") + 1] == "8"  # TUNEFORGE_MAX_BATCH_SIZE was set
    assert command[-3:] == ["--enforce-eager", "--seed", "3"]
    assert "--tensor-parallel-size" not in command
    env = engine_environment(settings, info, cpu)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2" and env["HF_HUB_OFFLINE"] == "1"
    assert "PROMETHEUS_MULTIPROC_DIR" not in env  # vLLM's metrics stay out of the workers' files
    gpus = engine_command(settings_for(llama), info, EngineChoice("vllm", "", Path("/p"), gpus=4), 1)
    assert gpus[gpus.index("--tensor-parallel-size") + 1] == "4"
    assert gpus[gpus.index("--gpu-memory-utilization") + 1] == "0.9"
    assert "--max-num-seqs" not in gpus  # vLLM's own default unless the setting is given


def test_engine_obstacles_named_in_words(model_dirs, tmp_path):
    settings = settings_for(model_dirs["t5"], SERVING_ENGINE="vllm")
    with pytest.raises(ModelError, match="encoder-decoder"):
        choose_engine(settings, check_model_dir(settings))
    folder = tmp_path / "unknown"
    shutil.copytree(model_dirs["instruct"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, architectures=["NoSuchForCausalLM"])))
    settings = settings_for(folder)
    choice = choose_engine(settings, check_model_dir(settings))
    if "not installed" not in choice.reason and "does not load" not in choice.reason:  # vLLM is here
        assert choice.reason.endswith("has no NoSuchForCausalLM")


def _adapter_copy(model_dirs, folder: Path, **config) -> Path:
    shutil.copytree(model_dirs["adapter"], folder)
    adapter = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(dict(adapter, **config)))
    return folder


def test_an_adapter_only_folder_runs_as_vllm_lora_on_its_base(model_dirs, tmp_path):
    settings = settings_for(model_dirs["adapter"])
    info = check_model_dir(settings)
    command = engine_command(settings, info, EngineChoice("vllm", "", Path("/p")), 1)
    assert command[command.index("--model") + 1] == str(info.base_dir)
    assert command[command.index("--lora-modules") + 1] == f"tuneforge-adapter={info.model_dir}"
    assert command[command.index("--max-lora-rank") + 1] == "8" and "--enable-lora" in command
    wide = _adapter_copy(model_dirs, tmp_path / "r40", r=40)
    command = engine_command(settings, check_model_dir(settings_for(wide)), EngineChoice("vllm", "", Path("/p")), 1)
    assert command[command.index("--max-lora-rank") + 1] == "64"  # the next rank vLLM takes


@pytest.mark.parametrize("change,words", [
    ({"use_dora": True}, "DoRA adapter"),
    ({"peft_type": "IA3"}, "IA3 adapter, and vLLM serves LoRA adapters only"),
    ({"r": 1024}, r"rank 1024 is above vLLM's largest \(512\)"),
    ({"modules_to_save": ["lm_head"]}, r"whole modules beside its LoRA weights \(lm_head"),
])
def test_adapters_vllm_cannot_load_are_named(model_dirs, tmp_path, change, words):
    folder = _adapter_copy(model_dirs, tmp_path / "adapter", **change)
    settings = settings_for(folder, SERVING_ENGINE="vllm")
    with pytest.raises(ModelError, match=words):
        choose_engine(settings, check_model_dir(settings))


def test_an_adapter_with_resized_embeddings_is_left_to_the_transformers_engine(model_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _adapter_copy(model_dirs, tmp_path / "adapter")
    weights = load_file(folder / "adapter_model.safetensors")
    weights["base_model.model.model.embed_tokens.weight"] = weights[next(iter(weights))].new_zeros(4, 2)
    save_file(weights, folder / "adapter_model.safetensors")
    settings = settings_for(folder, TUNEFORGE_VLLM_PYTHON="/nonexistent/python")
    choice = choose_engine(settings, check_model_dir(settings))
    assert choice.name == "transformers" and "(embed_tokens: e.g. embeddings resized" in choice.reason


def test_the_ngram_processor_bans_what_transformers_bans():
    """The engine-side rule (vllm_plugin/, run in vLLM's Python) against transformers' own processor."""
    import random

    import torch
    from transformers import NoRepeatNGramLogitsProcessor

    from tuneforge.serve.vllm_plugin.tuneforge_ngram_bans import banned_tokens

    rng = random.Random(0)
    for _ in range(300):
        ids, size = [rng.randrange(6) for _ in range(rng.randrange(0, 14))], rng.randrange(1, 5)
        scores = NoRepeatNGramLogitsProcessor(size)(torch.tensor([ids or [0]])[:, :len(ids)], torch.zeros(1, 6))
        assert banned_tokens(ids, size) == {t for t in range(6) if scores[0, t] == float("-inf")}, (ids, size)


def test_adapters_beside_full_weights_become_named_vllm_loras(model_dirs, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_dirs["instruct"], folder)
    for name, rank in (("red", 8), ("blue", 40)):
        _adapter_copy(model_dirs, folder / "adapters" / name, r=rank)
    settings = settings_for(folder)
    info = check_model_dir(settings)
    assert list(info.adapters) == ["blue", "red"]
    command = engine_command(settings, info, EngineChoice("vllm", "", Path("/p")), 1)
    at = command.index("--lora-modules")
    assert command[at + 1:at + 3] == [f"tuneforge-lora-blue={folder}/adapters/blue",
                                      f"tuneforge-lora-red={folder}/adapters/red"]
    assert command[command.index("--max-lora-rank") + 1] == "64"
    assert command[command.index("--max-loras") + 1] == "3"  # a slot left empty for requests without adapter
    assert command[command.index("--model") + 1] == str(folder)
    _adapter_copy(model_dirs, folder / "adapters" / "dora", use_dora=True)
    forced = settings_for(folder, SERVING_ENGINE="vllm")
    with pytest.raises(ModelError, match=r"adapters/dora: the folder holds a DoRA adapter"):
        choose_engine(forced, check_model_dir(forced))


@pytest.mark.parametrize("name,words", [("bad name", "cannot be a model name"), ("tiny-llama", "other than the base")])
def test_adapter_folders_need_names_requests_can_use(model_dirs, tmp_path, name, words):
    folder = tmp_path / "model"
    shutil.copytree(model_dirs["instruct"], folder)
    _adapter_copy(model_dirs, folder / "adapters" / name)
    with pytest.raises(ModelError, match=words):
        check_model_dir(settings_for(folder))
    (folder / "adapters" / name / "adapter_model.safetensors").unlink()
    (folder / "adapters" / name).rename(folder / "adapters" / "ok")
    with pytest.raises(ModelError, match="holds no adapter_model.safetensors"):
        check_model_dir(settings_for(folder))
