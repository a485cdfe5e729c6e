"""A model folder holding only a LoRA adapter is served on its base model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tuneforge.errors import ModelError
from tuneforge.serve.loader import check_model_dir
from tuneforge.serve.settings import ServeSettings

from tests.serve.conftest import INSTRUCT_BASE

PROMPT = "What color is the cherry?"


def reference_ids(adapter_dir, base_dir, tokens: int) -> list[int]:
    """Greedy ids from peft's own merged model, generated in this process."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.data.prompt import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).merge_and_unload()
    from tests.serve.conftest import instruction_format  # the adapter is an instruction fine-tune

    ids = torch.tensor([encode_prompt(tokenizer, instruction_format().render_text(PROMPT), seq2seq=False)])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_adapter_only_folder_is_served_with_the_adapter_applied(adapter_server, causal, model_dirs, tiny):
    served = adapter_server.generate(PROMPT, max_new_tokens=12)
    base = causal.generate(PROMPT, max_new_tokens=12)  # same base weights, no adapter
    served_ids = [t["id"] for t in served["details"]["tokens"]]
    assert served_ids != [t["id"] for t in base["details"]["tokens"]]
    expected = reference_ids(model_dirs["adapter"], tiny(INSTRUCT_BASE), 12)
    assert served_ids == expected[:len(served_ids)]  # on vLLM: its LoRA applied per request on the base
    info = __import__("requests").get(adapter_server.url + "/info", timeout=5).json()
    assert info["adapter_only"] is True and info["prompt_kind"] == "instruction"


def test_base_is_found_by_env_then_metadata_then_base_folder(tmp_path, model_dirs, tiny):
    adapter = tmp_path / "adapter"
    shutil.copytree(model_dirs["adapter"], adapter)
    meta = json.loads((adapter / "tuneforge.json").read_text())
    # metadata base_model_path
    assert check_model_dir(ServeSettings(model_dir=adapter)).base_dir == tiny(INSTRUCT_BASE)
    # the env setting wins over the metadata
    other = tmp_path / "other-base"
    shutil.copytree(tiny("llama"), other)
    assert check_model_dir(ServeSettings(model_dir=adapter, base_model_dir=other)).base_dir == other
    # <model_dir>/base when the metadata names none
    (adapter / "tuneforge.json").write_text(json.dumps(dict(meta, base_model_path=None)))
    shutil.copytree(tiny("llama"), adapter / "base")
    assert check_model_dir(ServeSettings(model_dir=adapter)).base_dir == adapter / "base"
    shutil.rmtree(adapter / "base")
    with pytest.raises(ModelError) as error:
        check_model_dir(ServeSettings(model_dir=adapter, base_model_dir=tmp_path / "nowhere"))
    message = str(error.value)
    assert "only a LoRA adapter" in message and "TUNEFORGE_BASE_MODEL_DIR" in message
    assert str(tmp_path / "nowhere") in message and "<model_dir>/base" in message


def test_serve_fails_fast_with_a_clear_message_when_the_base_is_missing(tmp_path, model_dirs):
    adapter = tmp_path / "adapter"
    shutil.copytree(model_dirs["adapter"], adapter)
    meta = json.loads((adapter / "tuneforge.json").read_text())
    (adapter / "tuneforge.json").write_text(json.dumps(dict(meta, base_model_path=str(tmp_path / "gone"))))
    result = subprocess.run([sys.executable, "-m", "tuneforge.serve.server", "--model-dir", str(adapter),
                             "--host", "127.0.0.1", "--port", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "base model was not found" in result.stderr and "Fix: set TUNEFORGE_BASE_MODEL_DIR" in result.stderr
    missing = subprocess.run([sys.executable, "-m", "tuneforge.serve.server", "--model-dir",
                              str(tmp_path / "none"), "--check"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    ok = subprocess.run([sys.executable, "-m", "tuneforge.serve.server", "--model-dir", str(model_dirs["instruct"]),
                         "--check"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "prompt format instruction" in ok.stderr
