"""Greedy answers of a model in memory and their ROUGE scores: the training job's validation
generations (llm/metrics.py) and the user's generation tasks (scoring.py) use the same two."""

from __future__ import annotations

import torch

from ..data.prompt import encode_prompt

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SCORE_KEYS = (*ROUGE_KEYS, "exact_match")


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], *, seq2seq: bool, max_new_tokens: int,
             max_input_length: int, batch_size: int = 8) -> list[str]:
    """Greedy answers, batched with left padding (right padding would break causal generation)."""
    model.eval()
    device = next(model.parameters()).device
    answers = []
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_prompt(tokenizer, p, seq2seq=seq2seq)[-max_input_length:]
                   for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(encoded):
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
        output = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=tokenizer.eos_token_id)
        new = output if seq2seq else output[:, width:]
        answers += [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
    return answers


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE F-measures (stemmed), as Autopilot reports them, and the share of answers equal
    to their reference (exact_match: case and surrounding space ignored)."""
    from rouge_score import rouge_scorer

    if not predictions:
        return {}
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for prediction, reference in zip(predictions, references):
        # rougeLsum splits summaries on newlines
        scores = scorer.score(reference, prediction)
        for key in ROUGE_KEYS:
            totals[key] += scores[key].fmeasure
    scores = {key: totals[key] / len(predictions) for key in ROUGE_KEYS}
    same = [p.strip().lower() == r.strip().lower() for p, r in zip(predictions, references)]
    scores["exact_match"] = sum(same) / len(same)
    return scores
