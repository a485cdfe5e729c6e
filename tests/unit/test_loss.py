"""The chunked causal LM loss (llm/loss.py) equals the standard one, loss and gradients, without
ever computing the logits of more than one chunk; and the Liger switch (llm/liger.py)."""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch

from tuneforge.data import Collator
from tuneforge.errors import HyperparameterError
from tuneforge.llm.liger import plan_liger
from tuneforge.llm.loss import CHUNKED_LOSS_FAMILIES, chunked_causal_lm_loss, plan_loss
from tuneforge.llm.packing import PackedCollator

TINY_FAMILIES = sorted(CHUNKED_LOSS_FAMILIES & {"llama", "mistral", "mixtral", "gemma", "gpt2", "gptj", "gpt_neo",
                                                "gpt_neox", "falcon", "bloom"})


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _batch(vocab: int, lengths=(12, 40, 7, 33), seed=2) -> dict:
    rng = random.Random(seed)
    rows = []
    for n, length in enumerate(lengths):
        ids = [rng.randint(4, vocab - 1) for _ in range(length)]
        prompt = 0 if n == 0 else rng.randint(1, length - 2)
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return Collator(0)(rows)


def _trainer(model, tmp_path, chunked: bool):
    from transformers import TrainingArguments

    from tuneforge.llm.trainer import TrainerPlan, TuneforgeTrainer

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], remove_unused_columns=False)
    return TuneforgeTrainer(model=model, args=args, plan=TrainerPlan(chunked_loss=chunked))


def _loss_and_grads(trainer, batch, items):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=items)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_chunked_loss_equals_the_standard_loss_and_gradients(tiny, tmp_path, family):
    """Through the Trainer's compute_loss, with the step's label count (training) and without it
    (evaluation: the batch's mean)."""
    model = _model(tiny(family))
    batch = _batch(model.config.vocab_size)
    items = batch["labels"][:, 1:].ne(-100).sum()
    standard, chunked = _trainer(model, tmp_path, False), _trainer(model, tmp_path, True)
    for step_items in (items, None):
        loss_std, grads_std = _loss_and_grads(standard, batch, step_items)
        loss_chunk, grads_chunk = _loss_and_grads(chunked, batch, step_items)
        assert loss_chunk == pytest.approx(loss_std, rel=1e-5)
        assert grads_chunk.keys() == grads_std.keys()
        for name in grads_std:
            torch.testing.assert_close(grads_chunk[name], grads_std[name], rtol=1e-4, atol=1e-6)


def test_several_chunks_sum_to_the_standard_loss_with_packing_too(tiny):
    model = _model(tiny("llama"))
    batch = PackedCollator(0, None)([{"input_ids": r, "labels": r} for r in ([5, 6, 7, 8, 9] * 9, [11, 12, 13] * 7)])
    items = batch["labels"][:, 1:].ne(-100).sum()
    with torch.no_grad():
        standard = model(**batch, num_items_in_batch=items).loss
        hidden = model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                             use_cache=False).last_hidden_state
    for chunk in (1, 7, 64, 10_000):
        with torch.no_grad():
            value = chunked_causal_lm_loss(hidden, model.lm_head, batch["labels"], items, chunk=chunk)
        assert value.item() == pytest.approx(standard.item(), rel=1e-5)


def test_no_more_than_one_chunk_of_logits_is_ever_computed(tiny, tmp_path):
    """The LM head sees at most CHUNK positions at a time (and one position in the model's own
    forward), where the standard loss computes batch x length x vocabulary logits."""
    model = _model(tiny("llama"))
    batch = _batch(model.config.vocab_size, lengths=(300, 280, 260, 310))
    widths = []
    handle = model.lm_head.register_forward_hook(lambda module, args, out: widths.append(out.shape[:-1].numel()))
    try:
        for chunked in (False, True):
            widths.clear()
            _loss_and_grads(_trainer(model, tmp_path, chunked), batch, batch["labels"][:, 1:].ne(-100).sum())
            if chunked:
                labels = int(batch["labels"][:, 1:].ne(-100).sum())
                assert max(widths) <= 1024 and sum(widths) >= labels  # forward and the recompute in backward
            else:
                assert widths == [batch["input_ids"].numel()]
    finally:
        handle.remove()


def test_lora_model_trains_the_same_with_the_chunked_loss(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(_model(tiny("llama")), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                             init_lora_weights=False))
    batch = _batch(model.config.vocab_size)
    items = batch["labels"][:, 1:].ne(-100).sum()
    loss_std, grads_std = _loss_and_grads(_trainer(model, tmp_path, False), batch, items)
    loss_chunk, grads_chunk = _loss_and_grads(_trainer(model, tmp_path, True), batch, items)
    assert loss_chunk == pytest.approx(loss_std, rel=1e-5) and grads_std
    for name in grads_std:
        torch.testing.assert_close(grads_chunk[name], grads_std[name], rtol=1e-4, atol=1e-6)


def test_plan_loss_uses_the_chunked_loss_only_where_it_is_exact(tiny):
    model = _model(tiny("llama"))
    plain = dict(seq2seq=False, sharded=False, label_smoothing=0.0, liger_fused=False)
    assert plan_loss(model, **plain) == {"kind": "chunked", "chunk": 1024}
    assert plan_loss(model, **{**plain, "label_smoothing": 0.1})["kind"] == "standard"
    assert plan_loss(model, **{**plain, "sharded": True})["kind"] == "standard"
    assert plan_loss(model, **{**plain, "liger_fused": True})["kind"] == "fused (Liger)"
    model.config.output_router_logits = True  # a router loss is added to the LM loss
    assert plan_loss(model, **plain)["kind"] == "standard"


# ------------------------------------------------------------------ Liger
def test_liger_is_off_without_cuda_and_true_then_fails_clearly():
    assert plan_liger("auto", "llama", cuda=False, seq2seq=False) == {
        "setting": "auto", "enabled": False, "why": "Liger's kernels are Triton GPU kernels: no CUDA device here"}
    assert plan_liger("false", "llama", cuda=True, seq2seq=False)["enabled"] is False
    if importlib.util.find_spec("liger_kernel") is None:  # the CPU environment: never imported, never needed
        assert "not installed" in plan_liger("auto", "llama", cuda=True, seq2seq=False)["why"]
    with pytest.raises(HyperparameterError, match="liger_kernel=true is not possible here") as error:
        plan_liger("true", "llama", cuda=False, seq2seq=False)
    assert "liger_kernel=auto" in str(error.value)


@pytest.mark.gpu
def test_liger_kernels_train_a_tiny_llama_to_the_same_loss_on_cuda(tiny, tmp_path):
    pytest.importorskip("liger_kernel")
    from transformers import Trainer, TrainingArguments

    assert plan_liger("auto", "llama", cuda=True, seq2seq=False)["enabled"]
    batch = {k: v.cuda() for k, v in _batch(_model(tiny("llama")).config.vocab_size).items()}
    losses = []
    for liger in (False, True):
        model = _model(tiny("llama")).cuda()
        args = TrainingArguments(output_dir=str(tmp_path / str(liger)), report_to=[], use_liger_kernel=liger)
        trainer = Trainer(model=model, args=args)
        if liger:
            from transformers.integrations.liger import apply_liger_kernel

            apply_liger_kernel(trainer.model, None)
        with torch.no_grad():
            losses.append(trainer.model(**batch).loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
