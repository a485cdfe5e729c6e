"""int8 and QLoRA (nf4, double quant) through the whole job, on bitsandbytes' CPU kernels.

Quantization is GPU-only for users (a CPU job with it on fails with a clear error, see
test_bad_input.py); TUNEFORGE_ALLOW_CPU_QUANTIZATION=1 lets these tests run the same code path
here: a quantized base, LoRA on top, and the adapter merged onto a fresh unquantized copy of the
base, so model/ holds plain float weights equal to base + B @ A * alpha / r."""

import pytest
import torch
from safetensors.torch import load_file

from tests.lora_checks import assert_merged_is_base_plus_adapter
from tuneforge.job.checkpoints import latest_checkpoint

pytest.importorskip("bitsandbytes")

HYPERPARAMETERS = {"instruction_tuned": "True", "max_steps": "6", "checkpoint_steps": "6",
                   "per_device_train_batch_size": "4", "learning_rate": "0.01", "load_best_model_at_end": "False",
                   "rouge_samples": "2", "max_output_length": "4", "lora_r": "4", "lora_alpha": "8"}


@pytest.mark.parametrize("quantization", [{"int8_quantization": "True"},
                                          {"load_in_4bit": "True", "quant_type": "nf4", "double_quant": "True"}],
                         ids=["int8", "qlora-nf4"])
def test_quantized_lora_merges_onto_an_unquantized_base(job, tiny, monkeypatch, quantization):
    monkeypatch.setenv("TUNEFORGE_ALLOW_CPU_QUANTIZATION", "1")
    base_dir = tiny("llama")
    job.add_model(base_dir)
    job.add_sample_data("instruction", n_train=16, n_val=4)
    job.hyperparameters({**HYPERPARAMETERS, **quantization})
    assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""

    metrics = job.metrics()
    assert metrics["quantization"] == ("int8" if "int8_quantization" in quantization else "nf4")
    assert metrics["quantized_layers"] == 14  # 7 linear layers in each of the 2 decoder layers
    base_params = sum(t.numel() for t in load_file(str(base_dir / "model.safetensors")).values())
    # packed 4-bit weights are counted as the parameters they stand for
    assert metrics["parameters"]["total"] == base_params + metrics["parameters"]["trainable"]
    assert metrics["steps"] == 6 and metrics["eval_loss"] < metrics["eval_loss_before"]
    merged = load_file(str(job.model_dir / "model.safetensors"))
    assert {t.dtype for t in merged.values()} == {torch.float32}  # not int8 / packed uint8 weights
    assert_merged_is_base_plus_adapter(job.model_dir, base_dir, latest_checkpoint(job.base / "checkpoints"))


def test_4bit_base_keeps_a_backward_after_eval_mode_forward(tiny, monkeypatch):
    """On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight into an inference-only layout
    the first time the layer runs in eval mode without gradients (the baseline evaluation does
    that); training then computed no gradient through the base layers. The promise, on any CPU:
    after such a forward the LoRA weights of the first layer still get a gradient."""
    from types import SimpleNamespace

    from tuneforge.config import parse_hyperparameters
    from tuneforge.modeling import apply_lora, load_model

    monkeypatch.setenv("TUNEFORGE_ALLOW_CPU_QUANTIZATION", "1")
    config = parse_hyperparameters({"load_in_4bit": "True", "lora_r": "4"})
    loaded = load_model(tiny("llama"), config)
    layers = [m for m in loaded.model.modules() if type(m).__name__ == "Linear4bit"]
    assert len(layers) == 14 and not any(m.support_avx512bf16_for_cpu for m in layers)
    model = apply_lora(SimpleNamespace(model=loaded.model, seq2seq=False), config)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    first_b = dict(model.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    assert first_b.grad is not None and first_b.grad.abs().max() > 0


def test_an_adapter_that_never_moved_fails_the_job(tiny):
    """The guard behind the promise: a LoRA model whose B matrices are still zero after training
    is refused, whatever kernel let the gradients vanish."""
    from types import SimpleNamespace

    from tuneforge.config import parse_hyperparameters
    from tuneforge.errors import ResourceError
    from tuneforge.modeling import apply_lora, load_model
    from tuneforge.llm.recipe import check_adapter_trained

    config = parse_hyperparameters({"lora_r": "4"})
    model = apply_lora(SimpleNamespace(model=load_model(tiny("llama"), config).model, seq2seq=False), config)
    with pytest.raises(ResourceError, match="ran 6 steps but the LoRA adapter did not change"):
        check_adapter_trained(model, 6)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n)[0, 0] = 1e-3
    check_adapter_trained(model, 6)
