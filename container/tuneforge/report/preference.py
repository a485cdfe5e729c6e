"""What the report shows for a preference job (training_method dpo, orpo, simpo or kto): its rows of
the before/after table, and which SFT rows it leaves out (the exp of a DPO loss is no perplexity)."""

from __future__ import annotations

from ..metrics_file import MetricsFile, PairAccuracy, Preference, PreferenceAccuracy
from .doc import Cell, change_cell, number

NAMES = {"dpo": "DPO", "orpo": "ORPO", "simpo": "SimPO", "kto": "KTO"}
SFT_ONLY_ROWS = ("perplexity", "train_perplexity")  # metrics.json keys of the rows a preference job leaves out


def preference_method(m: MetricsFile) -> str | None:
    """dpo, orpo, simpo or kto for a preference job; None for SFT (and for a job that did not say)."""
    recorded = m.preference
    if isinstance(recorded, Preference) and recorded.method:
        return str(recorded.method)
    values = (m.hyperparameters or {}).get("values") or {}
    method = values.get("training_method")
    return str(method) if method and method != "sft" else None


def method_name(method: str) -> str:
    return NAMES.get(method, method)


def preference_rows(m: MetricsFile) -> list[list[Cell]]:
    """Preference accuracy of the policy on the validation pairs (log p(chosen) > log p(rejected)),
    before and after; then the final evaluation's reward numbers (the policy against its
    reference, so there is no "before": at step 0 the two are one model)."""
    rows = []
    accuracy = m.preference_accuracy
    if isinstance(accuracy, PreferenceAccuracy):
        before, after = (stage or PairAccuracy() for stage in (accuracy.before, accuracy.after))
        pairs = after.pairs or before.pairs
        label = "preference accuracy (log p(chosen) > log p(rejected)" + (f", {pairs} pairs)" if pairs else ")")
        rows.append([Cell(label, css="strong"), number(before.accuracy, "preference_accuracy.before.accuracy"),
                     number(after.accuracy, "preference_accuracy.after.accuracy"),
                     _change(before.accuracy, after.accuracy)])
    for label, key, value in (("reward accuracy (final evaluation)", "final_reward_accuracy", m.final_reward_accuracy),
                              ("reward margin (final evaluation)", "final_reward_margin", m.final_reward_margin),
                              ("log p(chosen), mean (final evaluation)", "final_chosen_logps", m.final_chosen_logps),
                              ("log p(rejected), mean (final evaluation)", "final_rejected_logps",
                               m.final_rejected_logps)):
        if isinstance(value, (int, float)):
            rows.append([Cell(label, css="strong"), Cell("-"), number(value, key), Cell("")])
    return rows


def _change(before, after) -> Cell:
    return change_cell(before, after, False)  # one rounding and colouring of changes for every row


PREFERENCE_KEYS = {"final_reward_accuracy", "final_reward_margin", "final_chosen_logps", "final_rejected_logps"}
