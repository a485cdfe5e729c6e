import pytest

from tuneforge.llm.throughput import flops_per_token, mfu, peak_flops


def test_full_finetuning_is_six_flops_per_parameter_plus_attention():
    assert flops_per_token(1_000, 1_000, layers=2, hidden=8, seq_len=4) == 6_000 + 12 * 2 * 8 * 4


def test_lora_counts_weight_gradients_only_for_the_adapter():
    assert flops_per_token(1_000, 10, layers=0, hidden=0, seq_len=0) == 4_020


def test_peak_table_prefers_the_specific_name(monkeypatch):
    monkeypatch.delenv("TUNEFORGE_PEAK_TFLOPS", raising=False)
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA L40S") == 362e12 and peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("NVIDIA A10G") == 70e12
    assert peak_flops("Some Future GPU") is None


def test_mfu_of_a_7b_model_at_a_known_rate(monkeypatch):
    monkeypatch.delenv("TUNEFORGE_PEAK_TFLOPS", raising=False)
    per_token = flops_per_token(7_000_000_000, 7_000_000_000, layers=32, hidden=4096, seq_len=2048)
    # 3,000 tokens/s per H100 for full fine-tuning of 7B is about 13.7% of bf16 peak
    assert mfu(8 * 3_000, per_token, "NVIDIA H100 80GB HBM3", devices=8) == pytest.approx(0.1372, abs=1e-3)
    assert mfu(1_000, per_token, "unknown", devices=1) is None
    monkeypatch.setenv("TUNEFORGE_PEAK_TFLOPS", "100")
    assert mfu(1_000, 1e9, "unknown", devices=1) == pytest.approx(0.01)
