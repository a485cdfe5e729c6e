"""GPU-only: FSDP + LoRA and ZeRO-3 + LoRA, int8 and QLoRA on a ~1B random-init Llama, recording
tokens/s and peak GPU memory (printed, and appended to .cache/gpu-results.jsonl).

Run on the accelerator machine: `pytest -m gpu tests/distributed/test_gpu.py -s`.
Not run for docs/benchmarks.md yet: no GPU was available when these were written."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")]

RESULTS = Path(__file__).resolve().parents[2] / ".cache" / "gpu-results.jsonl"
COMMON = {"instruction_tuned": "True", "max_steps": "20", "per_device_train_batch_size": "4",
          "max_input_length": "512", "rouge_samples": "4", "max_output_length": "8", "learning_rate": "2e-4",
          "load_best_model_at_end": "False", "checkpoint_steps": "10"}


@pytest.fixture(scope="module")
def llama_1b(tmp_path_factory):
    """A TinyLlama-shaped (1.1B with a 32k vocabulary; ~0.97B with the test tokenizer) random Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tuneforge.tiny import build_tokenizer

    out = tmp_path_factory.mktemp("llama-1b")
    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                         num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def _run(job, model_path, hyperparameters, nproc: int):
    from .conftest import resource_config, run_job

    job.add_model(model_path)
    job.add_sample_data("instruction", n_train=256, n_val=16)
    resource_config(job)
    job.hyperparameters({**COMMON, **hyperparameters})
    code, log = run_job(job, timeout=1800, nproc=nproc)
    assert code == 0, log[-4000:]
    metrics = job.metrics()
    record = {"case": json.dumps(hyperparameters, sort_keys=True), "gpu": torch.cuda.get_device_name(0),
              "processes": nproc, "tokens_per_s": metrics["train_tokens_per_second"], "mfu": metrics.get("mfu"),
              "peak_memory_gib": metrics["peak_memory_gib"], "parallelism": metrics["parallelism"],
              "train_loss": metrics["train_loss"], "eval_loss": metrics.get("eval_loss")}
    print(json.dumps(record))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    return metrics


def test_fsdp_lora(job, llama_1b):
    metrics = _run(job, llama_1b, {"enable_fsdp": "True"}, nproc=torch.cuda.device_count())
    assert metrics["parallelism"] == "fsdp full_shard" and metrics["distributed_type"] == "FSDP"
    assert "rouge_skipped" not in metrics and set(metrics["general_knowledge"]) == {"before", "after"}  # lockstep
    assert (job.model_dir / "model.safetensors").exists() or (job.model_dir / "model.safetensors.index.json").exists()


def test_zero3_lora(job, llama_1b):
    metrics = _run(job, llama_1b, {"deepspeed": "zero3"}, nproc=torch.cuda.device_count())
    assert metrics["parallelism"] == "deepspeed zero3" and metrics["distributed_type"] == "DEEPSPEED"
    assert "rougeL" in metrics


@pytest.mark.parametrize("quantization", [{"int8_quantization": "True"},
                                          {"load_in_4bit": "True", "quant_type": "nf4", "double_quant": "True"}],
                         ids=["int8", "qlora-nf4"])
def test_quantized_lora_merges_onto_a_16bit_base(job, llama_1b, quantization):
    pytest.importorskip("bitsandbytes")
    metrics = _run(job, llama_1b, quantization, nproc=1)
    from safetensors import safe_open

    files = sorted(job.model_dir.glob("*.safetensors"))
    with safe_open(str(files[0]), "pt") as handle:
        dtypes = {str(handle.get_tensor(k).dtype) for k in handle.keys()}
    assert dtypes <= {"torch.bfloat16", "torch.float16"}, dtypes  # merged onto 16-bit, not int8/uint8 weights
    assert metrics["quantized_layers"] == 22 * 7 and metrics["peak_memory_gib"]["gpu"] > 0


def test_preflight_refuses_full_finetuning_that_cannot_fit(job, tmp_path_factory):
    """A 70B-shaped config (no weights needed: train_from_scratch) fails before loading, in seconds."""
    from transformers import LlamaConfig

    from tuneforge.tiny import build_tokenizer

    out = tmp_path_factory.mktemp("llama-70b-config")
    tokenizer = build_tokenizer()
    LlamaConfig(vocab_size=len(tokenizer), hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                num_attention_heads=64, num_key_value_heads=8).save_pretrained(out)
    tokenizer.save_pretrained(out)
    job.add_model(out)
    job.add_sample_data("instruction", n_train=32, n_val=4)
    job.hyperparameters({"instruction_tuned": "True", "peft_type": "none", "train_from_scratch": "True"})
    assert job.run_in_process() == 1
    first = job.failure_first_line()
    assert first.startswith("ResourceError: GPU memory preflight: training needs about") and "Fix:" in first
