"""Train/validation selection: a validation channel, or a seeded split of the train rows."""

from __future__ import annotations

import json
import random


def _cap(rows: list, limit: int) -> list:
    return rows if limit is None or limit < 0 else rows[:limit]


def select_and_split(train: list, validation: list | None, config) -> tuple[list, list]:
    """Apply validation_split_ratio (only without a validation channel) and the sample caps."""
    if validation is None:
        order = list(range(len(train)))
        random.Random(config.train_data_split_seed).shuffle(order)
        n_val = int(round(len(train) * config.validation_split_ratio))
        if config.validation_split_ratio > 0 and len(train) > 1:
            n_val = min(max(n_val, 1), len(train) - 1)
        val_idx = set(order[:n_val])
        validation = [train[i] for i in order[:n_val]]
        train = [row for i, row in enumerate(train) if i not in val_idx]
    return _cap(train, config.max_train_samples), _cap(validation, config.max_val_samples)


def _row_key(example) -> str:
    return json.dumps([example.prompt, example.completion, example.messages, example.text], sort_keys=True)


def validation_overlap(train: list, validation: list) -> dict | None:
    """How many validation rows are also training rows (same prompt and completion, messages or
    text); None when none are. Such rows measure memorisation, not generalisation."""
    seen = {_row_key(row) for row in train}
    shared = [row.source for row in validation if _row_key(row) in seen]
    if not shared:
        return None
    share = len(shared) / len(validation)
    which = "every validation row is" if len(shared) == len(validation) else \
        f"{len(shared)} of {len(validation)} validation rows ({share:.0%}) are"
    return {"rows": len(shared), "of": len(validation), "share": round(share, 4), "first": shared[:3],
            "note": f"{which} also in the training data: the validation loss, perplexity and ROUGE then measure "
                    "how well training rows were memorised, not how the model does on unseen data (generalisation); "
                    "use validation rows the training data lacks"}
