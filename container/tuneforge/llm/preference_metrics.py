"""What a preference job measures and prints.

- metric lines: TRL logs rewards/accuracies, rewards/margins, logps/chosen, logps/rejected (and their
  eval_ twins); they are printed as `[metric] train_reward_accuracy=`, `reward_margin=`,
  `train_chosen_logps=`, `train_rejected_logps=`, `eval_reward_accuracy=`, ... lines, which
  contract.METRIC_DEFINITIONS reads.
- preference accuracy of the policy itself, before and after training: the share of pairs where
  log p(chosen | prompt) > log p(rejected | prompt), prompts encoded as the server encodes them.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from ..logs import format_duration
from ..data.prompt import encode_prompt, token_ids
from ..job.metric_lines import metric_fields
from .callbacks import MetricLines
from .metrics import print_metric

# TRL's log key -> (training line name, evaluation line name, results key)
TRL_KEYS = {"rewards/accuracies": ("train_reward_accuracy", "eval_reward_accuracy", "reward_accuracy"),
            "rewards/margins": ("reward_margin", "eval_reward_margin", "reward_margin"),
            "logps/chosen": ("train_chosen_logps", "eval_chosen_logps", "chosen_logps"),
            "logps/rejected": ("train_rejected_logps", "eval_rejected_logps", "rejected_logps")}
MAX_ACCURACY_PAIRS = 256  # pairs scored for the policy's own preference accuracy


class PreferenceMetricLines(TrainerCallback):
    """Rank 0 prints the reward metrics of each training log and evaluation; the last ones are kept
    for the final_* lines (`last["train"]`, `last["eval"]`: results key -> value)."""

    def __init__(self):
        self.last: dict[str, dict] = {"train": {}, "eval": {}}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        if "loss" in logs:
            self._line(logs, "", 0, state, "train")
        if "eval_loss" in logs:
            self._line(logs, "eval_", 1, state, "eval")

    def _line(self, logs: dict, prefix: str, column: int, state, stage: str) -> None:
        found = {names: logs[prefix + key] for key, names in TRL_KEYS.items() if prefix + key in logs}
        for names, value in found.items():
            self.last[stage][names[2]] = value
        if found and state.is_world_process_zero:
            for names, value in found.items():
                print_metric(names[column], value, step=state.global_step)


class PreferenceProgressLines(MetricLines):
    """The SFT progress and evaluation lines, without perplexity: exp of a preference loss means nothing."""

    def evaluation_line(self, state, loss: float, runtime) -> str:
        seconds = f" ({format_duration(runtime)})" if isinstance(runtime, (int, float)) else ""
        if self.training_over:
            return f"final evaluation (the model that is saved): loss {loss:.4f}{seconds}"
        fields = metric_fields("eval_loss", loss, step=state.global_step, epoch=round(state.epoch or 0.0, 3))
        return f"evaluation at step {state.global_step}/{state.max_steps}: loss {loss:.4f}{seconds} {fields}"


def final_reward_metrics(last: dict[str, dict]) -> dict:
    """The final reward metrics: the final evaluation's where there is one, else the last training log's."""
    return dict(last.get("eval") or last.get("train") or {})


@torch.no_grad()
def completion_logp(model, tokenizer, prompt: str, answer: str, max_len: int) -> float:
    prompt_ids = encode_prompt(tokenizer, prompt, seq2seq=False)
    answer_ids = token_ids(tokenizer, answer) + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    ids = (prompt_ids + answer_ids)[-max_len:]
    start = max(1, len(ids) - len(answer_ids))
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
    logps = torch.log_softmax(logits[:-1], dim=-1)
    targets = torch.tensor(ids[1:], device=device)
    return logps[start - 1:].gather(1, targets[start - 1:, None]).sum().item()


def preference_accuracy(model, tokenizer, rows, max_len: int) -> dict:
    """Share of pairs (rendered rows) whose chosen answer the model finds likelier than the rejected one."""
    was_training = model.training
    model.eval()
    pairs = list(rows)[:MAX_ACCURACY_PAIRS]
    right = sum(completion_logp(model, tokenizer, r["prompt"], r["chosen"], max_len)
                > completion_logp(model, tokenizer, r["prompt"], r["rejected"], max_len) for r in pairs)
    model.train(was_training)
    return {"accuracy": round(right / len(pairs), 4) if pairs else None, "pairs": len(pairs)}
