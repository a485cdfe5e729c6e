"""Preference rows rendered into the text TRL's trainers take: {"prompt", "chosen", "rejected"}, or
{"prompt", "completion", "label"} for KTO's unpaired rows.

Paired rows' prompts go through the job's prompt format as the server renders a plain prompt
(PromptFormat.render_text); conversations through the chat template exactly as SFT chat and the
server render them (prompt.render_chat with the generation prompt; the answer is what the full
conversation adds after it). So what DPO trains on is what the model is served with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..errors import DataError
from ..data.prompt import render_chat


def render_pair(example, tokenizer, prompt_format) -> dict:
    unpaired = example.label is not None  # KTO: one answer and its label
    if not example.conversational:
        text = example.prompt if example.rendered else prompt_format.render_text(example.prompt)
        if unpaired:
            return {"prompt": text, "completion": example.completion, "label": example.label, "source": example.source}
        return {"prompt": text, "chosen": example.completion, "rejected": example.rejected, "source": example.source}
    template = prompt_format.chat_template
    prompt = render_chat(tokenizer, example.messages, add_generation_prompt=True, chat_template=template)
    row = {"prompt": prompt, "source": example.source}
    answers = ((("completion", example.chosen_turn),) if unpaired else
               (("chosen", example.chosen_turn), ("rejected", example.rejected_turn)))
    for key, turn in answers:
        whole = render_chat(tokenizer, example.messages + [turn], add_generation_prompt=False, chat_template=template)
        if not whole.startswith(prompt):
            raise DataError("the chat template does not render the conversation prefix by prefix, so the answer "
                            "cannot be told from its prompt", where=example.source,
                            fix="set the chat_template hyperparameter to a template that appends turns")
        row[key] = _end_at_eos(whole[len(prompt):], tokenizer.eos_token)
    return {**row, "label": example.label} if unpaired else row


def _end_at_eos(answer: str, eos: str | None) -> str:
    """An answer the template closes with EOS and a line break ends at the EOS: TRL appends an EOS to
    answers that do not end with one, which would train a second EOS after the break."""
    stripped = answer.rstrip()
    return stripped if eos and stripped.endswith(eos) else answer


@dataclass(frozen=True)
class PreferenceRows:
    """What DataBundle.train_tokens / val_tokens hold for a preference job: the rendered rows as a
    datasets.Dataset (TRL tokenizes them), their fingerprint (resume) and counts (report)."""
    features: Any
    fingerprint: str
    tokens: int
    sequences: int

    def report(self) -> dict:
        return {"rows": self.sequences, "sequences": self.sequences, "tokens": self.tokens, "rows_truncated": 0,
                "truncated_examples": []}


def preference_rows(examples: list, tokenizer, prompt_format, identity: dict) -> PreferenceRows:
    """Render `examples`; `identity` (method, beta, loss) goes into the fingerprint so a checkpoint
    of another method or setting is not resumed as this one."""
    from datasets import Dataset

    rows = [render_pair(e, tokenizer, prompt_format) for e in examples]
    digest = hashlib.sha256(json.dumps([identity, rows], sort_keys=True).encode()).hexdigest()[:16]
    columns = [k for k in ("prompt", "chosen", "rejected", "completion", "label") if rows and k in rows[0]]
    tokens = sum(len(tokenizer("".join(r[k] for k in columns if k != "label"), add_special_tokens=False)["input_ids"])
                 for r in rows)
    features = Dataset.from_list([{k: r[k] for k in columns} for r in rows])
    return PreferenceRows(features=features, fingerprint=f"preference-{digest}", tokens=tokens, sequences=len(rows))


def pair_token_ids(features, tokenizer) -> list[dict]:
    """The pairs tokenized as TRL's DPOTrainer tokenizes rendered text pairs (trl 1.16): an EOS
    appended to answers without one, prompt+answer tokenized whole and the answer starting where
    it and the prompt alone diverge. Setup plans the batching on these before TRL tokenizes."""
    from trl.data_utils import common_prefix_length

    eos, rows = tokenizer.eos_token or "", []
    for row in features:
        prompt = tokenizer(text=row["prompt"])["input_ids"]
        whole = {key: tokenizer(text=row["prompt"] + (row[key] if row[key].endswith(eos) else row[key] + eos))["input_ids"]
                 for key in ("chosen", "rejected")}
        start = min(common_prefix_length(prompt, ids) for ids in whole.values())
        rows.append({"prompt_ids": prompt[:start], "chosen_ids": whole["chosen"][start:],
                     "rejected_ids": whole["rejected"][start:]})
    return rows
