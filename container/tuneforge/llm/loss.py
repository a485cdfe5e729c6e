"""Causal LM loss without the full logits tensor: the LM head and cross-entropy only on label
positions, a chunk at a time.

The standard loss computes logits for every position of the batch (batch x length x vocabulary,
upcast to fp32: 4 GiB for 8 x 1024 positions and a 128k vocabulary) although prompt and padding
positions have no label. Here the model runs with `logits_to_keep=1` (its LM head sees one
position), a forward hook on the decoder keeps the final hidden states, and `chunked_causal_lm_loss`
takes the positions whose next token is a label, applies the LM head to CHUNK of them at a time
and sums their cross-entropy. Each chunk runs under activation checkpointing, so its logits are
recomputed in backward instead of kept: the peak is one chunk of logits. The sum is divided as the
Trainer's own loss is (by num_items_in_batch, the label tokens of the whole step, or by the
batch's label count), so the loss and gradients equal the standard ones (tests/unit/test_loss.py).

The model is still called through its wrappers (DDP, PEFT), so their hooks run. Not used where the
LM head is not a plain projection of the last hidden state or runs sharded: families outside
CHUNKED_LOSS_FAMILIES, FSDP and ZeRO-3 (the head's weights exist whole only inside its own
forward), label smoothing, Liger's fused linear cross-entropy (which does the same in one kernel).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
from torch.nn import functional
from torch.utils.checkpoint import checkpoint

from ..data.tokenize import IGNORE
from ..families import CHUNKED_LOSS_FAMILIES  # logits = lm_head(last hidden state)

CHUNK = 1024  # label positions per LM-head chunk: 1024 x 128k vocabulary x fp32 = 0.5 GiB


def _head_chunk(lm_head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = lm_head(hidden).float()
    return functional.cross_entropy(logits, targets, reduction="sum")


def chunked_causal_lm_loss(hidden: torch.Tensor, lm_head, labels: torch.Tensor,
                           num_items_in_batch=None, chunk: int = CHUNK) -> torch.Tensor:
    """Cross-entropy of lm_head(hidden) against the next-token labels, as transformers'
    ForCausalLMLoss computes it: summed over label positions, divided by num_items_in_batch when
    given, else by the number of label positions."""
    targets = labels[:, 1:]
    keep = targets != IGNORE
    states = hidden[:, :-1][keep]
    targets = targets[keep].to(states.device)
    total = states.new_zeros((), dtype=torch.float32)
    for start in range(0, states.shape[0], chunk):
        part = states[start:start + chunk]
        if torch.is_grad_enabled() and part.requires_grad:
            total = total + checkpoint(_head_chunk, lm_head, part, targets[start:start + chunk], use_reentrant=False)
        else:
            total = total + _head_chunk(lm_head, part, targets[start:start + chunk])
    if num_items_in_batch is None:
        return total / keep.sum().clamp(min=1)  # mean; NaN-free where a batch has no label at all
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


@contextmanager
def capture_last_hidden_state(decoder):
    """Record what `decoder` (the model's transformer body) returns while the block runs."""
    captured: dict = {}

    def hook(module, args, output):
        captured["hidden"] = output[0] if isinstance(output, (tuple, list)) else output.last_hidden_state

    handle = decoder.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _base_model(model):
    """The transformers model under PEFT's wrappers."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def plan_loss(model, *, seq2seq: bool, sharded: bool, label_smoothing: float, liger_fused: bool) -> dict:
    """Which loss the run uses, for metrics.json: chunked where the model allows it."""
    base = _base_model(model)
    model_type = getattr(base.config, "model_type", "?")
    why_not = None
    if liger_fused:
        why_not = "Liger's fused linear cross-entropy computes the loss without logits"
    elif seq2seq:
        why_not = "encoder-decoder model"
    elif sharded:
        why_not = "FSDP / ZeRO-3 shard the LM head, which exists whole only inside its own forward"
    elif label_smoothing:
        why_not = "label_smoothing_factor > 0 uses the Trainer's label smoother"
    elif model_type not in CHUNKED_LOSS_FAMILIES or getattr(base.config, "output_router_logits", False):
        why_not = f"the {model_type} head is not a plain projection (or adds a router loss)"
    elif "logits_to_keep" not in inspect.signature(base.forward).parameters:
        why_not = f"the {model_type} model cannot skip its logits (no logits_to_keep)"
    if why_not:
        return {"kind": "fused (Liger)" if liger_fused else "standard", "why": why_not}
    return {"kind": "chunked", "chunk": CHUNK}


def chunked_compute_loss(model, unwrapped, inputs: dict, num_items_in_batch=None):
    """(loss, outputs) of the Trainer's compute_loss for a batch with labels, the loss computed by
    chunked_causal_lm_loss from the last hidden state (the model computes the logits of one
    position only). `unwrapped` is `model` without accelerate's wrappers."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    base = _base_model(unwrapped)
    with capture_last_hidden_state(base.get_decoder()) as captured:
        outputs = model(**inputs, logits_to_keep=1)
    loss = chunked_causal_lm_loss(captured["hidden"], base.get_output_embeddings(), labels, num_items_in_batch)
    return loss, outputs
