"""Evaluation beyond the loss: generations on validation prompts, ROUGE, perplexity, metric lines.

Metric lines are printed as `name=value` so SageMaker metric definitions can read them (the
regexes are in README.md); a JumpStart Llama-style line is printed too, so its existing metric
definitions keep working.
"""

from __future__ import annotations

import math


from ..job.metric_lines import print_metric  # noqa: F401 - the recipe's metric lines
from ..evaluation.generation import ROUGE_KEYS, SCORE_KEYS, generate, rouge  # noqa: F401 - the recipe's
from ..data.prompt import render_chat



def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(min(loss, 50.0))


def generation_pairs(examples, tokenizer, prompt_format, limit: int) -> list[tuple[str, str]]:
    """(prompt text, reference) for the first `limit` validation examples that have a reference."""
    pairs = []
    for example in examples:
        if len(pairs) >= limit:
            break
        if example.messages is not None:
            last = max(i for i, m in enumerate(example.messages) if m["role"] == "assistant")
            prompt = render_chat(tokenizer, example.messages[:last], add_generation_prompt=True,
                                 chat_template=prompt_format.chat_template)
            pairs.append((prompt, example.messages[last]["content"]))
        elif example.completion:
            pairs.append((example.prompt, example.completion))
    return pairs


# results -> tracker metrics (trackers/): final/<name> after training, base/<name> before it
FINAL_KEYS = ("train_loss", "train_perplexity", "eval_loss", "perplexity", *SCORE_KEYS, "train_tokens_per_second",
              "train_runtime_s", "mfu", "steps")
BASE_KEYS = {"eval_loss_before": "eval_loss", "perplexity_before": "perplexity"}


def tracker_finals(results: dict) -> dict[str, float]:
    """The job's final numbers as trackers name them: final/train_loss, final/rouge1,
    final/eval_<task> (evaluation channel), base/eval_loss (the untouched model), ..."""
    values = {f"final/{k}": results.get(k) for k in FINAL_KEYS}
    values.update({f"base/{name}": results.get(key) for key, name in BASE_KEYS.items()})
    for task, stages in (results.get("evaluation") or {}).items():
        for stage, result in stages.items():
            values[f"{'base' if stage == 'before' else 'final'}/eval_{task}"] = (result or {}).get("score")
    for stage, result in (results.get("general_knowledge") or {}).items():
        values[f"{'base' if stage == 'before' else 'final'}/general_knowledge"] = (result or {}).get("score")
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def print_final_lines(results: dict, names: tuple) -> None:
    """The final_<name> metric line of each of `names` that metrics.json holds a number for (a name
    already starting with final_ keeps it)."""
    for name in names:
        value = results.get(name)
        if isinstance(value, (int, float)):
            print_metric(name if name.startswith("final_") else f"final_{name}", value)


SUMMARY_KEYS = ("train_loss", "eval_loss_before", "eval_loss", "perplexity_before", "perplexity", *SCORE_KEYS,
                "steps", "epochs")


def metric_summary(results: dict) -> dict:
    """metrics.json's headline numbers for the model folder's metadata (NaN left out)."""
    summary = {k: results[k] for k in SUMMARY_KEYS
               if k in results and not (isinstance(results[k], float) and math.isnan(results[k]))}
    knowledge = {stage: r["score"] for stage, r in results.get("general_knowledge", {}).items()}
    if knowledge:
        summary["general_knowledge"] = knowledge
    return summary


def tracker_scalars(logs: dict, tokens_per_second: float | None = None) -> dict[str, float]:
    """One Trainer log (a logging step or an evaluation) as tracker scalars: train/loss,
    train/learning_rate, train/grad_norm, train/epoch, train/tokens_per_second; eval/loss and
    eval/perplexity (the baseline evaluation before training too, at step 0)."""
    values = {}
    if "loss" in logs:
        values = {f"train/{k}": logs.get(k) for k in ("loss", "learning_rate", "grad_norm", "epoch")}
        values["train/tokens_per_second"] = tokens_per_second or None
    loss = logs.get("eval_loss", logs.get("eval_before_loss"))
    if isinstance(loss, (int, float)):
        values.update({"eval/loss": loss, "eval/perplexity": perplexity(loss)})
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
