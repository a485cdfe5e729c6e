"""FSDP runs only on GPUs, but the settings tuneforge hands the Trainer are checked here: the
real TrainingArguments turns them into accelerate's FSDP plugin arguments on any machine."""

from transformers import AutoConfig, TrainingArguments

from tuneforge.config import parse_hyperparameters
from tuneforge.job.distributed import fsdp_config, fsdp_settings


def test_fsdp_settings_become_a_full_shard_fsdp2_plugin_wrapping_decoder_layers(tiny, tmp_path):
    config = parse_hyperparameters({"enable_fsdp": "True", "gradient_checkpointing": "True"})
    settings = fsdp_config(config, AutoConfig.from_pretrained(tiny("llama")))
    args = TrainingArguments(output_dir=str(tmp_path), fsdp=True, fsdp_config=settings, use_cpu=True, report_to=[])
    assert args.fsdp_plugin_args == {
        "fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_cls_names_to_wrap": "LlamaDecoderLayer", "reshard_after_forward": True,
        "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": False, "activation_checkpointing": True}


def test_each_family_wraps_its_own_decoder_layer(tiny):
    config = parse_hyperparameters({"enable_fsdp": "True"})
    wrapped = {family: fsdp_config(config, AutoConfig.from_pretrained(tiny(family)))["transformer_layer_cls_to_wrap"]
               for family in ("mistral", "falcon", "t5")}
    assert wrapped["mistral"] == ["MistralDecoderLayer"] and "FalconDecoderLayer" in wrapped["falcon"]
    assert "T5Block" in wrapped["t5"]


def test_without_a_gpu_fsdp_is_not_requested(tiny, caplog):
    config = parse_hyperparameters({"enable_fsdp": "True"})
    assert fsdp_settings(config, AutoConfig.from_pretrained(tiny("llama"))) is None
    assert "enable_fsdp=True needs GPUs" in caplog.text
