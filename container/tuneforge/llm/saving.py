"""Turn the trained model into files in the staging folder: merged, full, or adapter only.

Called on every rank. When the weights are sharded (DeepSpeed ZeRO-3, FSDP) gathering them is a
collective, so every rank takes part and rank 0 alone writes:
- full fine-tuning: the gathered 16-bit state dict;
- LoRA, merge_weights=False: the adapter part of the gathered state dict;
- LoRA, merge_weights=True: that adapter, merged on rank 0 into a fresh copy of the base
  (merging in place would need every base weight whole on one rank).
Quantized (int8/4-bit) bases cannot absorb an adapter either: the adapter is merged into a
fresh 16-bit copy of the base, the same way.

Before anything is written, every floating-point weight about to be saved is checked: a model
with a NaN or inf weight fails the job (naming the tensor) instead of being published.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch

from ..errors import ResourceError
from ..job.artifacts import is_disk_full
from ..job.finite import check_finite

log = logging.getLogger(__name__)


def save_model(trainer, staging: Path | None, *, config, tokenizer, base_path: Path, sharded: bool,
               model_dir: Path) -> bool:
    """Write the trainer's weights and `tokenizer` to `staging` (rank 0 passes it, others None);
    True when only an adapter is saved. `sharded` (ZeRO-3, FSDP) makes gathering the weights a
    collective; `base_path` is the base merged onto afresh. A full disk becomes a ResourceError
    naming `model_dir`."""
    try:
        return _save_model(trainer, staging, config=config, tokenizer=tokenizer, base_path=base_path,
                           sharded=sharded)
    except Exception as exc:
        if staging is None or not is_disk_full(exc):
            raise
        raise ResourceError(f"no space left while writing the trained model ({str(exc).splitlines()[0]}); "
                            "model/ was left as it was", where=str(model_dir),
                            fix="give the job more disk (VolumeSizeInGB on SageMaker) or free space there") from exc


def _save_model(trainer, staging: Path | None, *, config, tokenizer, base_path: Path, sharded: bool) -> bool:
    model = trainer.accelerator.unwrap_model(trainer.model)
    adapter_only = config.use_lora and not config.merge_weights
    state_dict = None
    if sharded:
        engine = trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model
        state_dict = trainer.accelerator.get_state_dict(engine)  # collective
    if staging is None:
        return adapter_only
    fresh_base = dict(base_path=base_path, config=config, tokenizer=tokenizer)
    if state_dict is not None:
        state_dict = {k: v for k, v in state_dict.items()}
        check_finite(state_dict.items())
        if not config.use_lora or adapter_only:
            model.save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
        else:
            _merge_onto_fresh_base(model, staging, state_dict=state_dict, **fresh_base)
    elif not config.use_lora or adapter_only:
        check_finite(model.state_dict().items())
        model.save_pretrained(staging, safe_serialization=True)
    elif config.quantization != "none":
        _merge_onto_fresh_base(model, staging, **fresh_base)
    else:
        merged = model.merge_and_unload()
        check_finite(merged.state_dict().items(), "merged model")
        merged.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.pad_token_id = tokenizer.pad_token_id
        generation.eos_token_id = generation.eos_token_id or tokenizer.eos_token_id
        generation.save_pretrained(staging)
    return adapter_only


def _merge_onto_fresh_base(model, staging: Path, *, base_path: Path, config, tokenizer,
                           state_dict: dict | None = None) -> None:
    """Save the adapter, load the base again unquantized and unsharded, merge, save."""
    from peft import PeftModel

    from ..modeling import load_model
    from ..job.distributed import without_zero_init

    with tempfile.TemporaryDirectory(prefix="tuneforge-adapter-") as adapter_dir:
        kwargs = {"state_dict": state_dict} if state_dict is not None else {}
        model.save_pretrained(adapter_dir, safe_serialization=True, **kwargs)
        with without_zero_init():
            base = load_model(base_path, config, tokenizer=tokenizer, quantize=False).model
        peft_model = PeftModel.from_pretrained(base, adapter_dir)
        if state_dict is not None:
            # the gathered weights are exactly what was trained (new token rows, from-scratch bases)
            result = peft_model.load_state_dict(state_dict, strict=False)
            if result.unexpected_keys:
                log.warning("%d gathered weights matched nothing in the fresh base (first: %s)",
                            len(result.unexpected_keys), result.unexpected_keys[0])
        merged = peft_model.merge_and_unload()
        check_finite(merged.state_dict().items(), "merged model")
        merged.save_pretrained(staging, safe_serialization=True)
    log.info("merged the adapter into a fresh %s copy of the base", next(merged.parameters()).dtype)
