"""What the report shows for a preference job (training_method dpo, orpo, simpo or kto): its rows of
the before/after table, and which SFT rows it leaves out (the exp of a DPO loss is no perplexity)."""

from __future__ import annotations

from .doc import Cell, change_cell, number

NAMES = {"dpo": "DPO", "orpo": "ORPO", "simpo": "SimPO", "kto": "KTO"}
SFT_ONLY_ROWS = ("perplexity", "train_perplexity")  # metrics.json keys of the rows a preference job leaves out


def preference_method(m: dict) -> str | None:
    """dpo, orpo, simpo or kto for a preference job; None for SFT (and for a job that did not say)."""
    recorded = m.get("preference")
    if isinstance(recorded, dict) and recorded.get("method"):
        return str(recorded["method"])
    values = (m.get("hyperparameters") or {}).get("values") or {}
    method = values.get("training_method")
    return str(method) if method and method != "sft" else None


def method_name(method: str) -> str:
    return NAMES.get(method, method)


def preference_rows(m: dict) -> list[list[Cell]]:
    """Preference accuracy of the policy on the validation pairs (log p(chosen) > log p(rejected)),
    before and after; then the final evaluation's reward numbers (the policy against its
    reference, so there is no "before": at step 0 the two are one model)."""
    rows = []
    accuracy = m.get("preference_accuracy")
    if isinstance(accuracy, dict):
        before, after = (accuracy.get(stage) or {} for stage in ("before", "after"))
        pairs = after.get("pairs") or before.get("pairs")
        label = "preference accuracy (log p(chosen) > log p(rejected)" + (f", {pairs} pairs)" if pairs else ")")
        rows.append([Cell(label, css="strong"), number(before.get("accuracy"), "preference_accuracy.before.accuracy"),
                     number(after.get("accuracy"), "preference_accuracy.after.accuracy"),
                     _change(before.get("accuracy"), after.get("accuracy"))])
    for label, key in (("reward accuracy (final evaluation)", "final_reward_accuracy"),
                       ("reward margin (final evaluation)", "final_reward_margin"),
                       ("log p(chosen), mean (final evaluation)", "final_chosen_logps"),
                       ("log p(rejected), mean (final evaluation)", "final_rejected_logps")):
        if isinstance(m.get(key), (int, float)):
            rows.append([Cell(label, css="strong"), Cell("-"), number(m[key], key), Cell("")])
    return rows


def _change(before, after) -> Cell:
    return change_cell(before, after, False)  # one rounding and colouring of changes for every row


PREFERENCE_KEYS = {"final_reward_accuracy", "final_reward_margin", "final_chosen_logps", "final_rejected_logps"}
