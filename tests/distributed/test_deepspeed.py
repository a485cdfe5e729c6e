"""DeepSpeed ZeRO-2 and ZeRO-3 with 2 CPU processes (gloo): model/ holds real, loadable weights.

The first DeepSpeed run on a machine JIT-builds its ops (g++, ninja) into
~/.cache/torch_extensions, about 30 s; later runs reuse them."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.lora_checks import assert_merged_is_base_plus_adapter
from tuneforge.job.checkpoints import latest_checkpoint

from .conftest import reload_and_generate, run_job

pytestmark = pytest.mark.slow

BASE = {"instruction_tuned": "True", "max_steps": "4", "checkpoint_steps": "2", "per_device_train_batch_size": "4",
        "learning_rate": "0.01", "load_best_model_at_end": "False", "rouge_samples": "2", "max_output_length": "4",
        "seed": "3"}
FULL = {**BASE, "peft_type": "none"}


def _weights(folder) -> dict:
    return load_file(str(folder / "model.safetensors"))


def _train(job, hyperparameters) -> dict:
    job.hyperparameters(hyperparameters)
    code, log = run_job(job)
    assert code == 0, log[-4000:]
    assert not job.failure.exists()
    return job.metrics()


@pytest.fixture(scope="module")
def zero2_full(tmp_path_factory, tiny):
    from tests.conftest import Job

    from .conftest import resource_config

    job = Job(tmp_path_factory.mktemp("zero2") / "opt" / "ml")
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=32, n_val=8)
    resource_config(job)
    metrics = _train(job, {**FULL, "deepspeed": "zero2"})
    return job, metrics


def test_zero2_full_finetuning_saves_loadable_trained_weights(zero2_full, tiny):
    job, metrics = zero2_full
    assert metrics["parallelism"] == "deepspeed zero2" and metrics["distributed_type"] == "DEEPSPEED"
    assert metrics["steps"] == 4
    shards = sorted(p.name for p in latest_checkpoint(job.base / "checkpoints").glob("global_step4/*optim_states.pt"))
    assert len(shards) == 2  # each rank's optimizer partition is in the checkpoint
    base, trained = _weights(tiny("llama")), _weights(job.model_dir)
    assert base.keys() == trained.keys()
    assert all(trained[k].shape == base[k].shape for k in base)
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.weight"], trained["model.layers.0.self_attn.q_proj.weight"])
    reload_and_generate(job.model_dir)


def test_zero3_from_a_config_channel_file_gathers_full_weights(small_job, zero2_full):
    """ZeRO-3 from a JSON file in the `config` channel, written without
    stage3_gather_16bit_weights_on_model_save: tuneforge turns it on so model/ holds whole
    weights; they match ZeRO-2's (same seed, data and math, parameters sharded differently)."""
    job = small_job
    ds = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": "auto",
          "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "zero_allow_untested_optimizer": True}
    (job.channel("config") / "ds_zero3.json").write_text(json.dumps(ds))
    metrics = _train(job, {**FULL, "deepspeed": "ds_zero3.json"})
    assert metrics["parallelism"] == "deepspeed zero3"
    assert "rougeL" in metrics  # generation ran on both ranks in lockstep instead of hanging on rank 0
    zero3, zero2 = _weights(job.model_dir), _weights(zero2_full[0].model_dir)
    assert zero3.keys() == zero2.keys()
    for name in zero2:
        assert zero3[name].numel() > 0
        torch.testing.assert_close(zero3[name], zero2[name], atol=2e-4, rtol=1e-3, msg=name)
    reload_and_generate(job.model_dir)


def test_zero3_lora_merged_is_base_plus_the_trained_adapter(small_job, tiny):
    job = small_job
    metrics = _train(job, {**BASE, "deepspeed": "zero3", "merge_weights": "True"})
    assert metrics["parallelism"] == "deepspeed zero3"
    final = latest_checkpoint(job.base / "checkpoints")  # holds the gathered adapter of the last step
    assert_merged_is_base_plus_adapter(job.model_dir, tiny("llama"), final)
    reload_and_generate(job.model_dir)


def test_zero3_lora_adapter_only_is_a_real_adapter(small_job, tiny):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = small_job
    _train(job, {**BASE, "deepspeed": "zero3", "merge_weights": "False"})
    meta = json.loads((job.model_dir / "tuneforge.json").read_text())
    assert meta["adapter_only"] is True
    adapter = load_file(str(job.model_dir / "adapter_model.safetensors"))
    assert len(adapter) == 8 and all(t.numel() > 0 for t in adapter.values())
    assert any(k.endswith("lora_B.weight") and t.abs().max() > 0 for k, t in adapter.items())
    base = AutoModelForCausalLM.from_pretrained(tiny("llama"))
    model = PeftModel.from_pretrained(base, job.model_dir)
    ids = torch.tensor([[1, 5, 6, 7]])
    assert model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False).shape == (1, 7)


@pytest.mark.parametrize("preset", ["zero2_offload", "zero3_offload"])
def test_offload_presets_train_and_save_whole_trained_weights(small_job, tiny, preset):
    """Optimizer state (and for ZeRO-3 the parameters) offloaded to host memory, updated by
    DeepSpeed's CPU Adam (JIT-built on first use, about 2 min on 2 cores); model/ still holds
    whole, trained weights."""
    job = small_job
    metrics = _train(job, {**FULL, "deepspeed": preset})
    assert metrics["parallelism"] == f"deepspeed {preset.replace('_offload', '')}+offload"
    base, trained = _weights(tiny("llama")), _weights(job.model_dir)
    assert base.keys() == trained.keys() and all(trained[k].shape == base[k].shape for k in base)
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.weight"], trained["model.layers.0.self_attn.q_proj.weight"])
    reload_and_generate(job.model_dir)
