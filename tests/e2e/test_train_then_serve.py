"""What the training job writes is served end to end: merged weights, and an adapter on its base."""

import json

import pytest

from tests.serve.conftest import Server

LEARN = {"instruction_tuned": "True", "peft_type": "none", "epoch": "8", "learning_rate": "0.003",
         "per_device_train_batch_size": "16", "rouge_samples": "0"}


@pytest.mark.slow
def test_trained_model_answers_structured_and_tgi_requests(job, tiny, tmp_path):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction")
    job.hyperparameters(LEARN)
    assert job.run_in_process() == 0
    server = Server(job.model_dir, tmp_path / "serve.log").wait_ready()
    try:
        # structured fields are rendered with the template saved by training
        response = server.post(json={"inputs": {"instruction": "What color is the banana?",
                                                "context": "Many people walk near the river."},
                                     "parameters": {"max_new_tokens": 12}})
        assert response.status_code == 200, response.text
        assert response.json()[0]["generated_text"].strip() == "The banana is yellow."
        # the same prompt written out by hand gives the same answer
        prompt = json.loads((job.model_dir / "tuneforge.json").read_text())["prompt"]
        from tuneforge.data.prompt import PromptFormat

        text = PromptFormat.from_dict(prompt).render_prompt({"instruction": "What color is the banana?",
                                                             "context": "Many people walk near the river."})
        assert server.generate(text, max_new_tokens=12)["generated_text"].strip() == "The banana is yellow."
    finally:
        assert server.stop() == 0


def test_adapter_only_output_is_served_on_its_base(job, tiny, tmp_path):
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", n_train=32, n_val=8)
    job.hyperparameters({"instruction_tuned": "True", "merge_weights": "False", "max_steps": "4",
                         "learning_rate": "0.05", "per_device_train_batch_size": "8", "rouge_samples": "0"})
    assert job.run_in_process() == 0
    assert (job.model_dir / "adapter_model.safetensors").exists()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.data.prompt import encode_prompt

    base = job.base / "input" / "data" / "model"
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), job.model_dir).merge_and_unload()
    from tuneforge.data.prompt import PromptFormat

    fmt = PromptFormat.from_dict(json.loads((job.model_dir / "tuneforge.json").read_text())["prompt"])
    ids = encode_prompt(tokenizer, fmt.render_text("What color is the lime?"), seq2seq=False)  # as served
    out = model.generate(torch.tensor([ids]), max_new_tokens=8, min_new_tokens=8, do_sample=False)
    expected = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)

    server = Server(job.model_dir, tmp_path / "serve.log").wait_ready()
    try:
        answer = server.generate("What color is the lime?", max_new_tokens=8)  # TGI has no min_new_tokens
        assert answer["details"]["generated_tokens"] == 8
        assert answer["generated_text"] == expected
    finally:
        assert server.stop() == 0
