"""Padding-free packing (llm/packing.py): bins, layout, and the math. A packed batch gives the
loss and gradients of the padded batch, and no token attends across a row boundary."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from tuneforge.data import Collator
from tuneforge.errors import HyperparameterError
from tuneforge.families import BY_TYPE
from tuneforge.llm.packing import PACKING_FAMILIES, PackedCollator, best_fit_bins, plan_packing


def _rows(lengths, vocab=1000, seed=1, full_label_rows=(0, 3)):
    """Rows of random ids; most have a masked prompt, the rows in `full_label_rows` are labelled
    from their first token (as domain blocks are), so masking a row's first label matters."""
    rng = random.Random(seed)
    rows = []
    for n, length in enumerate(lengths):
        ids = [rng.randint(4, vocab - 1) for _ in range(length)]
        prompt = 0 if n in full_label_rows else rng.randint(1, length - 2)
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def _model(path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval()  # no dropout: the comparisons are exact math


# ------------------------------------------------------------------ bins and layout
@pytest.mark.parametrize("seed", range(5))
def test_best_fit_puts_every_row_in_one_bin_within_capacity_and_wastes_little(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(5, 600) for _ in range(200)]
    bins = best_fit_bins(lengths, 1024)
    assert sorted(i for b in bins for i in b) == list(range(200))
    assert all(sum(lengths[i] for i in b) <= 1024 for b in bins)
    lower_bound = -(-sum(lengths) // 1024)
    assert len(bins) <= lower_bound + 2  # best fit decreasing is within a few bins of optimal here


def test_a_row_longer_than_the_capacity_gets_a_bin_of_its_own():
    bins = best_fit_bins([1500, 10, 20], 1024)
    assert [0] in bins and sorted(i for b in bins for i in b) == [0, 1, 2]


def test_best_fit_chooses_the_fullest_bin_that_still_fits():
    # longest first: 60 and 50 open two bins (space 40 and 50); 40 goes to the fuller one (exact
    # fit), 30 to the other
    assert best_fit_bins([30, 50, 40, 60], 100) == [[3, 2], [1, 0]]


def test_packed_batch_layout():
    rows = [{"input_ids": [11, 12, 13], "labels": [-100, 12, 13]},
            {"input_ids": [21, 22], "labels": [21, 22]},
            {"input_ids": [31, 32, 33, 34], "labels": [-100, -100, 33, 34]}]
    flat = PackedCollator(pad_id=0, capacity=None)(rows)
    assert "attention_mask" not in flat and flat["use_cache"] is False
    assert flat["input_ids"].tolist() == [[11, 12, 13, 21, 22, 31, 32, 33, 34]]
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert flat["labels"].tolist() == [[-100, 12, 13, -100, 22, -100, -100, 33, 34]]  # each row's first label masked
    binned = PackedCollator(pad_id=0, capacity=5)(rows)
    assert binned["input_ids"].tolist() == [[31, 32, 33, 34, 0], [11, 12, 13, 21, 22]]
    assert binned["position_ids"].tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]  # padding: a row of its own
    assert binned["labels"].tolist() == [[-100, -100, 33, 34, -100], [-100, 12, 13, -100, 22]]


def test_domain_blocks_are_split_at_document_boundaries():
    block = {"input_ids": [1, 2, 3, 4, 5, 6], "labels": [1, 2, 3, 4, 5, 6], "segment_lengths": [2, 3, 1]}
    batch = PackedCollator(pad_id=0, capacity=None)([block])
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1, 2, 0]]
    assert batch["labels"].tolist() == [[-100, 2, -100, 4, 5, -100]]


# ------------------------------------------------------------------ the math
@pytest.mark.parametrize("capacity", [None, 128], ids=["flattened", "bins"])
def test_packed_and_padded_batches_give_the_same_loss_and_gradients(tiny, capacity):
    model = _model(tiny("llama"))
    rows = _rows([6, 55, 8, 60, 7, 52, 30, 41], vocab=model.config.vocab_size)
    items = torch.tensor(sum(sum(label != -100 for label in r["labels"][1:]) for r in rows))

    def loss_and_grads(batch):
        model.zero_grad()
        loss = model(**batch, num_items_in_batch=items).loss
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    packed = PackedCollator(0, capacity)(rows)
    padded = Collator(0)(rows)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    loss_packed, grads_packed = loss_and_grads(packed)
    loss_padded, grads_padded = loss_and_grads(padded)
    assert loss_packed == pytest.approx(loss_padded, rel=1e-5)
    for a, b in zip(grads_packed, grads_padded):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _row_b_logits(model, row_a, row_b, batch_extra=None):
    collated = PackedCollator(0, None)([{"input_ids": row_a, "labels": row_a}, {"input_ids": row_b, "labels": row_b}])
    collated.pop("labels")
    collated.update(batch_extra or {})
    with torch.no_grad():
        return model(**collated).logits[0, len(row_a):]


def _tiny_extra_family(name, tmp_path):
    """qwen2 / qwen3 / phi3: in the family table, checked here, but not shipped as tiny models."""
    import transformers as tf

    config = BY_TYPE[name].tiny(tf, 1000)
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


@pytest.mark.parametrize("family", sorted(PACKING_FAMILIES))
def test_no_token_attends_across_a_row_boundary(tiny, tmp_path, family):
    """Row B's logits in the packed batch do not change when row A's tokens do, and equal row B's
    logits on its own: for every family packing claims."""
    model = _tiny_extra_family(family, tmp_path) if family in ("qwen2", "qwen3", "phi3") else _model(tiny(family))
    rng = random.Random(3)
    row_a, row_a2, row_b = ([rng.randint(4, model.config.vocab_size - 1) for _ in range(n)] for n in (9, 9, 7))
    b_after_a = _row_b_logits(model, row_a, row_b)
    b_after_a2 = _row_b_logits(model, row_a2, row_b)
    with torch.no_grad():
        b_alone = model(input_ids=torch.tensor([row_b])).logits[0]
    torch.testing.assert_close(b_after_a, b_after_a2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b_after_a, b_alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["bloom", "falcon"])
def test_families_left_out_really_let_packed_rows_see_each_other(tiny, family):
    """Why bloom and falcon are not in PACKING_FAMILIES (and that the check above can fail)."""
    assert family not in PACKING_FAMILIES
    model = _model(tiny(family))
    rng = random.Random(3)
    row_a, row_a2, row_b = ([rng.randint(4, model.config.vocab_size - 1) for _ in range(n)] for n in (9, 9, 7))
    assert not torch.allclose(_row_b_logits(model, row_a, row_b), _row_b_logits(model, row_a2, row_b), atol=1e-5)


def test_without_use_cache_false_the_rows_would_see_each_other(tiny):
    """transformers builds the block-diagonal mask only when no KV cache is made; the packed batch
    says use_cache=False for that reason."""
    model = _model(tiny("llama"))
    rng = random.Random(3)
    row_a, row_a2, row_b = ([rng.randint(4, model.config.vocab_size - 1) for _ in range(n)] for n in (9, 9, 7))
    leak = {"use_cache": True}
    assert not torch.allclose(_row_b_logits(model, row_a, row_b, leak), _row_b_logits(model, row_a2, row_b, leak),
                              atol=1e-5)


def test_documents_in_a_packed_domain_block_do_not_attend_to_each_other(tiny):
    model = _model(tiny("llama"))
    rng = random.Random(4)
    doc1, doc1_changed, doc2 = ([rng.randint(4, model.config.vocab_size - 1) for _ in range(n)] for n in (10, 10, 6))

    def doc2_logits(first):
        block = {"input_ids": first + doc2, "labels": first + doc2, "segment_lengths": [len(first), len(doc2)]}
        batch = PackedCollator(0, 64)([block])
        batch.pop("labels")
        with torch.no_grad():
            return model(**batch).logits[0, len(first):len(first) + len(doc2)]

    torch.testing.assert_close(doc2_logits(doc1), doc2_logits(doc1_changed), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ the choice
def _stub(model_type="llama", attention="sdpa"):
    return SimpleNamespace(config=SimpleNamespace(model_type=model_type, _attn_implementation=attention))


def test_auto_packs_only_with_a_varlen_kernel():
    cpu = plan_packing("auto", _stub(), seq2seq=False, pad_id=0, max_len=512)
    assert not cpu.enabled and "slower" in cpu.report["why"] and cpu.collator is None
    flash = plan_packing("auto", _stub(attention="flash_attention_2"), seq2seq=False, pad_id=0, max_len=512)
    assert flash.enabled and flash.collator.capacity is None and "varlen" in flash.report["layout"]


def test_true_packs_into_bins_with_sdpa_and_false_never_packs():
    forced = plan_packing("true", _stub(), seq2seq=False, pad_id=0, max_len=512)
    assert forced.enabled and forced.collator.capacity == 512
    off = plan_packing("false", _stub(attention="flash_attention_2"), seq2seq=False, pad_id=0, max_len=512)
    assert not off.enabled and off.report["why"] == "packing=false"


@pytest.mark.parametrize("model_type, seq2seq", [("bloom", False), ("t5", True)])
def test_true_fails_clearly_where_rows_cannot_be_kept_apart(model_type, seq2seq):
    with pytest.raises(HyperparameterError, match="packing=true is not possible") as error:
        plan_packing("true", _stub(model_type), seq2seq=seq2seq, pad_id=0, max_len=512)
    assert "packing=auto" in str(error.value)
    assert not plan_packing("auto", _stub(model_type), seq2seq=seq2seq, pad_id=0, max_len=512).enabled


def test_a_packed_trainer_trains_on_packed_batches_and_evaluates_padded_ones(tiny, tmp_path):
    from transformers import TrainingArguments

    from tuneforge.llm.trainer import TrainerPlan, TuneforgeTrainer

    rows = _rows([20, 90, 35, 60, 12, 44, 70, 25], full_label_rows=())
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                             use_cpu=True, report_to=[], remove_unused_columns=False)
    trainer = TuneforgeTrainer(model=_model(tiny("llama")), args=args, train_dataset=rows, eval_dataset=rows,
                               data_collator=PackedCollator(0, 256), plan=TrainerPlan(eval_collator=Collator(0)))
    train_batch = next(iter(trainer.get_train_dataloader()))
    eval_batch = next(iter(trainer.get_eval_dataloader()))
    assert "position_ids" in train_batch and "attention_mask" not in train_batch
    assert "attention_mask" in eval_batch and "position_ids" not in eval_batch


def test_domain_blocks_record_where_each_document_starts(tiny):
    """tokenize.py's blocks carry segment_lengths: the document pieces each holds, cut after each EOS."""
    from transformers import AutoTokenizer

    from tuneforge.data import Example, tokenize_examples
    from tuneforge.data.prompt import PromptFormat

    tokenizer = AutoTokenizer.from_pretrained(tiny("llama"))
    texts = ["The lime is green. " * n for n in (3, 11, 1, 6, 2)]
    domain = PromptFormat(kind="domain", prompt_template="", completion_template="")
    data = tokenize_examples([Example(source=f"t:{i}", text=t) for i, t in enumerate(texts)], tokenizer, domain,
                             max_len=32, max_out=8, seq2seq=False)
    eos = tokenizer.eos_token_id
    for block in data.features:
        assert sum(block["segment_lengths"]) == len(block["input_ids"])
        ends = [sum(block["segment_lengths"][:k + 1]) for k in range(len(block["segment_lengths"]))]
        # every piece but the block's last ends with its document's EOS, and no EOS is inside a piece
        assert all(block["input_ids"][end - 1] == eos for end in ends[:-1])
        assert [i + 1 for i, t in enumerate(block["input_ids"]) if t == eos] == [e for e in ends if
                                                                                 block["input_ids"][e - 1] == eos]
    assert sum(len(b["segment_lengths"]) > 1 for b in data.features) >= 2  # blocks that hold several documents


def test_packed_padding_share_is_what_the_collator_produces():
    from tuneforge.llm.batching import first_epoch_order
    from tuneforge.llm.packing import packed_padding_share

    rows = _rows([random.Random(i).randint(20, 400) for i in range(64)])
    assert packed_padding_share(rows, None, "group_by_length", 8, 1, 10) == 0.0  # one flattened row: no padding
    order = first_epoch_order(rows, 8, 10)
    real = total = 0
    for at in range(0, 64, 8):
        ids = PackedCollator(0, 512)([rows[i] for i in order[at:at + 8]])["input_ids"]
        real, total = real + int((ids != 0).sum()), total + ids.numel()
    assert packed_padding_share(rows, 512, "group_by_length", 8, 1, 10) == pytest.approx(1 - real / total, abs=1e-4)
    assert 0 < 1 - real / total
