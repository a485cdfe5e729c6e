"""int8 and QLoRA (nf4, double quant) through the whole job, on bitsandbytes' CPU kernels.

Quantization is GPU-only for users (a CPU job with it on fails with a clear error, see
test_bad_input.py); TUNEFORGE_ALLOW_CPU_QUANTIZATION=1 lets these tests run the same code path
here: a quantized base, LoRA on top, and the adapter merged onto a fresh unquantized copy of the
base, so model/ holds plain float weights equal to base + B @ A * alpha / r."""

import pytest
import torch
from safetensors.torch import load_file

from tests.lora_checks import assert_merged_is_base_plus_adapter
from tuneforge.train.checkpoints import latest_checkpoint

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
