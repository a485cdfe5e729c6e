"""attn_implementation: auto resolves to SDPA without CUDA/flash_attn, an explicit choice reaches
the loaded model, and a FlashAttention kernel that cannot run here fails clearly before loading."""

import pytest

from tuneforge.config import parse_hyperparameters
from tuneforge.errors import HyperparameterError
from tuneforge.modeling import load_model, pick_attention
from tuneforge.llm.packing import plan_packing

pytestmark = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU resolution")


def _config(**values):
    return parse_hyperparameters({"peft_type": "none", **values})


def test_auto_is_sdpa_on_cpu_and_reaches_the_model(tiny):
    config = _config()
    assert config.attn_implementation == "auto" and pick_attention(config) == "sdpa"
    model = load_model(tiny("llama"), config).model
    assert model.config._attn_implementation == "sdpa"
    # packing=auto stays off without FlashAttention varlen kernels
    plan = plan_packing("auto", model, seq2seq=False, pad_id=0, max_len=64)
    assert plan.report["enabled"] is False and plan.report["attention"] == "sdpa"


def test_eager_is_honoured(tiny):
    model = load_model(tiny("llama"), _config(attn_implementation="eager")).model
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("kernel", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_without_a_gpu_fails_naming_the_field_and_the_fix(tiny, kernel):
    with pytest.raises(HyperparameterError) as caught:
        load_model(tiny("llama"), _config(attn_implementation=kernel))
    text = str(caught.value)
    assert "attn_implementation" in text and kernel in text and "no GPU is visible" in text
    assert "set attn_implementation=auto" in text


def test_unknown_kernel_is_a_hyperparameter_error():
    with pytest.raises(HyperparameterError, match="attn_implementation"):
        _config(attn_implementation="flash")
