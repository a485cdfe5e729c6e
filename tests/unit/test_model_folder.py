"""The model folder contract: tuneforge.json as ModelMetadata, and what counts as weights."""

import json

import pytest
import torch

from tuneforge.errors import ModelError
from tuneforge.model_folder import (FORMAT_VERSION, METADATA_FILE, ModelMetadata, check_weights, choose_dtype,
                                    config_context_length, context_length, holds_weights, is_adapter_only,
                                    is_complete)
from tuneforge.data.prompt import PromptFormat
from tuneforge.job.artifacts import ModelWriter


def test_metadata_round_trips_and_is_stamped(tmp_path):
    prompt = PromptFormat(kind="instruction", prompt_template="{prompt}", completion_template="{completion}")
    written = ModelMetadata(architecture="causal", base_model="tiny", adapter_only=True, base_model_path="/base",
                            prompt=prompt.to_dict(), max_input_length=256, hyperparameters={"epoch": 1},
                            metrics={"train_loss": 1.5})
    path = written.write(tmp_path)
    raw = json.loads(path.read_text())
    assert raw["format_version"] == FORMAT_VERSION and raw["tuneforge_version"] and raw["created"].endswith("Z")
    read = ModelMetadata.read(tmp_path)
    assert read.model_dump(exclude={"tuneforge_version", "created"}) == \
        written.model_dump(exclude={"tuneforge_version", "created"})
    assert read.prompt_format() == prompt


def test_files_from_before_versions_and_plain_folders_still_read(tmp_path):
    assert ModelMetadata.read(tmp_path) is None  # a plain Hugging Face folder
    (tmp_path / METADATA_FILE).write_text(json.dumps({"architecture": "seq2seq", "adapter_only": False,
                                                      "added_later": 1}))
    old = ModelMetadata.read(tmp_path)
    assert (old.format_version, old.architecture, old.model_extra) == (1, "seq2seq", {"added_later": 1})
    assert old.prompt_format().kind == "domain"  # nothing to format with: plain text


@pytest.mark.parametrize("text,fragment", [
    ("{broken", "not valid JSON (line 1"),
    ("[1, 2]", "must be a JSON object, not list"),
    (json.dumps({"format_version": FORMAT_VERSION + 1}), f"format_version {FORMAT_VERSION + 1} is not one this release"),
    (json.dumps({"format_version": "1"}), "format_version '1'"),
    (json.dumps({"architecture": "diffusion"}), "architecture: Input should be 'causal' or 'seq2seq'"),
    (json.dumps({"adapter_only": "perhaps"}), "adapter_only: Input should be a valid boolean"),
])
def test_a_bad_metadata_file_is_a_model_error_naming_it(tmp_path, text, fragment):
    (tmp_path / METADATA_FILE).write_text(text)
    with pytest.raises(ModelError) as err:
        ModelMetadata.read(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / METADATA_FILE}: ") and fragment in str(err.value)
    assert "Fix: " in str(err.value)


def test_the_writer_refuses_undeclared_keys(tmp_path):
    writer = ModelWriter(type("P", (), {"model_dir": tmp_path / "model"})())
    writer.start()
    with pytest.raises(ValueError, match="undeclared tuneforge.json keys: archtecture"):
        writer.write_metadata({"archtecture": "causal"})
    writer.write_metadata({"architecture": "causal", "adapter_only": False})
    assert json.loads((writer.staging / METADATA_FILE).read_text())["architecture"] == "causal"
    writer.discard()


def test_what_counts_as_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="holds no model weights"):
        check_weights(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError) as err:
        check_weights(tmp_path, allow_pickle_hint="TUNEFORGE_ALLOW_PICKLE=true")
    assert "only pickle (*.bin) weights" in str(err.value) and "TUNEFORGE_ALLOW_PICKLE=true" in str(err.value)
    check_weights(tmp_path, allow_pickle=True)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    assert holds_weights(tmp_path)
    with pytest.raises(ModelError):
        check_weights(tmp_path)  # an adapter is not full weights
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x")
    check_weights(tmp_path)  # shards without their index still count


def test_adapter_only_and_complete_folders(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    assert is_adapter_only(tmp_path, None) and not is_complete(tmp_path)
    ModelMetadata(adapter_only=True).write(tmp_path)
    assert is_complete(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert not is_adapter_only(tmp_path, None) and is_adapter_only(tmp_path, ModelMetadata(adapter_only=True))


def test_context_length_and_dtype_choice():
    from types import SimpleNamespace as NS

    assert context_length(NS(max_position_embeddings=512, n_positions=9), NS(model_max_length=128)) == 512
    assert context_length(NS(seq_length=300), NS(model_max_length=10**30)) == 300
    assert context_length(NS(), NS(model_max_length=777)) == 777
    assert context_length(NS(), NS(model_max_length=10**30)) == 2048  # bloom: alibi, no declared length
    assert config_context_length(NS(max_position_embeddings=True)) is None
    assert choose_dtype("auto", "cpu") == torch.float32
    assert choose_dtype("bf16", "cpu") == choose_dtype("bfloat16", "cpu") == torch.bfloat16
    assert choose_dtype("fp16", "cuda") == torch.float16
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        choose_dtype("half", "cpu")


@pytest.mark.parametrize("file,name", [("SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
                                       ("llama-2-7b.Q4_K_M.gguf", "llama-2-7b"), ("phi3-f16.gguf", "phi3"),
                                       ("Mistral-7B.tar.gz", "Mistral-7B"), ("plain.gguf", "plain")])
def test_model_files_are_named_without_archive_and_quantization_suffixes(file, name):
    from tuneforge.model_folder import name_from_file

    assert name_from_file(file) == name


def test_an_unpacked_archive_keeps_its_name_not_the_temporary_folders(tmp_path):
    import tarfile

    from tuneforge.archives import extract_model_archive
    from tuneforge.model_folder import model_name

    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text("{}")
    for archive_name, expected in (("Mistral-7B.tar.gz", "Mistral-7B"), ("model.tar.gz", None)):
        archive = tmp_path / archive_name
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(source / "config.json", arcname="config.json")
        target = extract_model_archive(archive, tmp_path / f"out-{archive_name}")
        assert model_name(target) == (expected or target.name)  # model.tar.gz names nothing
