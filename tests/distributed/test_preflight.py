"""The memory preflight's estimator, as a pure function with made-up GPU sizes."""

import dataclasses

import pytest

from tuneforge.errors import ResourceError
from tuneforge.llm.preflight import GiB, MemoryPlan, check, count_parameters, estimate

# Llama-2-7B-shaped: 6.74B parameters, hidden 4096, 32 layers, vocabulary 32000; LoRA r=8 on q,v
LLAMA7B = MemoryPlan(total_params=6_738_415_616, trainable_params=6_738_415_616, hidden_size=4096, num_layers=32,
                     vocab_size=32000, batch_size=4, seq_len=1024, devices=1, weight_format="bf16",
                     lora_trainable_params=4_194_304)


def test_full_finetuning_accounting_is_16_bytes_per_parameter_plus_activations():
    need = estimate(LLAMA7B)
    p = LLAMA7B.total_params
    assert need.weights == 4 * p and need.gradients == 4 * p and need.optimizer == 8 * p
    tokens = 4 * 1024
    assert need.activations == 34 * tokens * 4096 * 32 + 10 * tokens * 32000
    assert need.total == pytest.approx(16 * p + need.activations + GiB)


def test_sharding_and_offload_divide_what_they_should():
    eight = dataclasses.replace(LLAMA7B, devices=8)
    plain, zero2, zero3 = (estimate(dataclasses.replace(eight, sharding=s)) for s in ("none", "zero2", "zero3"))
    assert zero2.weights == plain.weights and zero2.optimizer == plain.optimizer / 8
    assert zero3.weights == plain.weights / 8 and zero3.gradients == plain.gradients / 8
    assert estimate(dataclasses.replace(eight, sharding="fsdp")) == zero3
    offload = estimate(dataclasses.replace(eight, sharding="zero3", offload=True))
    assert offload.optimizer == 0 and offload.weights < zero3.weights
    checkpointed = estimate(dataclasses.replace(LLAMA7B, gradient_checkpointing=True))
    assert checkpointed.activations < plain.activations / 5


def test_7b_full_finetuning_on_a_24_gib_gpu_fails_fast_with_numbers_and_what_fits():
    with pytest.raises(ResourceError) as info:
        check(LLAMA7B, 24 * GiB)
    message = str(info.value)
    assert message.startswith("GPU memory preflight: training needs about 1")
    assert "weights 25.1" in message and "optimizer 50.2" in message and "each GPU has 24.0 GiB" in message
    assert "QLoRA (peft_type=lora, load_in_4bit=True) (~" in message
    assert "TUNEFORGE_SKIP_PREFLIGHT=1" in message


def test_what_fits_depends_on_the_device_size():
    lora = dataclasses.replace(LLAMA7B, trainable_params=LLAMA7B.lora_trainable_params, batch_size=1)
    assert check(lora, 24 * GiB).total < 24 * GiB  # LoRA, batch 1, 7B in bf16 fits a 24 GiB GPU
    with pytest.raises(ResourceError) as info:
        check(lora, 12 * GiB)
    assert "QLoRA" in str(info.value) and "peft_type=lora (" not in str(info.value)
    eight = dataclasses.replace(LLAMA7B, devices=8, batch_size=1)
    assert check(dataclasses.replace(eight, sharding="zero3"), 80 * GiB).total < 80 * GiB
    with pytest.raises(ResourceError, match="no single setting fits"):
        check(LLAMA7B, 1 * GiB)


def test_parameter_counts_come_from_a_weightless_model(tiny):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneforge.config import parse_hyperparameters

    path = tiny("llama")
    config = parse_hyperparameters({"lora_r": "8"})
    total, lora = count_parameters(AutoConfig.from_pretrained(path), config, seq2seq=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert total == sum(p.numel() for p in model.parameters())
    peft = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    assert lora == sum(p.numel() for p in peft.parameters() if p.requires_grad)


def test_a_jobs_plan_reads_the_model_config_and_the_settings(tiny):
    """plan_for, the bridge from a job to the estimator (it runs only on GPUs in real jobs)."""
    import types

    import torch
    from transformers import AutoConfig

    from tuneforge.config import parse_hyperparameters
    from tuneforge.llm.preflight import plan_for
    from tuneforge.job.distributed import preset

    model_config = AutoConfig.from_pretrained(tiny("llama"))
    qlora = parse_hyperparameters({"load_in_4bit": "True", "per_device_train_batch_size": "2",
                                   "gradient_checkpointing": "True"})
    job = types.SimpleNamespace(config=qlora, fsdp_active=False, dtype=torch.bfloat16)
    plan = plan_for(job, model_config, 128, preset("zero3_offload"))
    assert (plan.hidden_size, plan.num_layers, plan.vocab_size) == (model_config.hidden_size, 2, model_config.vocab_size)
    assert plan.weight_format == "nf4" and plan.sharding == "zero3" and plan.offload
    assert plan.batch_size == 2 and plan.seq_len == 128 and plan.gradient_checkpointing
    assert plan.trainable_params == plan.lora_trainable_params > 0
    full = types.SimpleNamespace(config=parse_hyperparameters({"peft_type": "none"}), fsdp_active=True,
                                 dtype=torch.bfloat16)
    plan = plan_for(full, model_config, 64, None)
    assert plan.weight_format == "bf16" and plan.sharding == "fsdp" and plan.trainable_params == plan.total_params


def test_the_chunked_loss_counts_one_chunk_of_logits():
    from tuneforge.llm.loss import CHUNK

    plan = dataclasses.replace(LLAMA7B, batch_size=8, seq_len=1024, vocab_size=128_256)
    full, chunked = estimate(plan), estimate(dataclasses.replace(plan, chunked_loss=True))
    assert full.activations - chunked.activations == 10 * (8 * 1024 - CHUNK) * 128_256  # about 8.6 GiB


def test_which_jobs_use_the_chunked_loss(tiny):
    from transformers import AutoConfig

    from tuneforge.config import parse_hyperparameters
    from tuneforge.llm.preflight import uses_chunked_loss

    llama = AutoConfig.from_pretrained(tiny("llama"))
    cfg = parse_hyperparameters({})
    assert uses_chunked_loss(llama, cfg, seq2seq=False, sharding="none")
    assert not uses_chunked_loss(llama, cfg, seq2seq=False, sharding="zero3")
    assert not uses_chunked_loss(llama, parse_hyperparameters({"label_smoothing_factor": "0.1"}),
                                 seq2seq=False, sharding="none")
