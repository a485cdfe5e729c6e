"""Regenerate container/tuneforge/ticket_answers.py: SmolLM2-135M-Instruct's own greedy answers
(24 new tokens, float32, its chat template) to the bundled ticket prompts, which the ticket
preference pairs reject (tuneforge.samples.ticket_preference_rows). Run after changing the
tickets: .venv/bin/python scripts/make_ticket_answers.py"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.gguf import convert_gguf, smollm2_gguf
from tuneforge.samples import TICKET_PREFERENCE_SETS, ticket_rows

OUT = Path(__file__).resolve().parents[1] / "container" / "tuneforge" / "ticket_answers.py"
NEW_TOKENS = 24


def answers(model, tokenizer, rows: list[dict]) -> list[str]:
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(r["messages"][:1], add_generation_prompt=True, tokenize=False) for r in rows]
    out = []
    for start in range(0, len(texts), 16):
        encoded = tokenizer(texts[start:start + 16], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            generated = model.generate(**encoded, max_new_tokens=NEW_TOKENS, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id)
        width = encoded["input_ids"].shape[1]
        out += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in generated]
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = convert_gguf(smollm2_gguf(), Path(tmp) / "smollm2")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        sets = {name: answers(model, tokenizer, ticket_rows(n, seed)) for name, (n, seed) in TICKET_PREFERENCE_SETS.items()}
    lines = ['"""SmolLM2-135M-Instruct\'s own greedy answers to the bundled ticket prompts (written by',
             'scripts/make_ticket_answers.py; the rejected answers of tuneforge.samples.ticket_preference_rows)."""',
             "", "BASE_ANSWERS = {"]
    for name, texts in sets.items():
        lines.append(f"    {name!r}: [")
        lines += [f"        {text!r}," for text in texts]
        lines.append("    ],")
    OUT.write_text("\n".join(lines + ["}", ""]))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
