"""Scores of one model on tasks (tasks.py): greedy answers for generation items, the
log-likelihood of each choice for multiple-choice items, computed as lm-evaluation-harness's
`hf` model computes them (same token split, no BOS added), so the numbers agree with it."""

from __future__ import annotations

import torch

from ..errors import DataError
from ..prompt import render_chat, template_fields
from .harness import HARNESS, score_harness_task
from .tasks import GENERATION, Task

MC_CONTEXT = "Question: {question}\nAnswer:"  # MMLU/ARC style, as lm-eval task YAMLs write it
DELIMITER = " "  # lm-eval's target_delimiter between the context and each choice


def score_task(task: Task, loaded, *, max_new_tokens: int = 64) -> dict:
    """{"kind", "items", "score" (the task's headline number), the metrics, "details"}."""
    if task.kind == GENERATION:
        return _generation(task, loaded, max_new_tokens)
    if task.kind == HARNESS:
        return score_harness_task(task, loaded)
    if loaded.seq2seq:
        raise DataError("multiple-choice items are scored by a causal model's log-likelihoods; this model is "
                        "an encoder-decoder", where=str(task.path), fix="use generation items for this model")
    return _multiple_choice(task, loaded)


def _multiple_choice(task: Task, loaded) -> dict:
    right = right_norm = 0
    details = []
    for item in task.items:
        context = MC_CONTEXT.format(question=item["question"])
        scores = [loglikelihood(loaded.model, loaded.tokenizer, context, DELIMITER + c) for c in item["choices"]]
        best = max(range(len(scores)), key=scores.__getitem__)
        best_norm = max(range(len(scores)), key=lambda i: scores[i] / len(item["choices"][i]))
        right += best == item["answer"]
        right_norm += best_norm == item["answer"]
        details.append({"question": item["question"], "chosen": best, "answer": item["answer"],
                        "loglikelihoods": [round(s, 6) for s in scores]})
    n = len(task.items)
    return {"kind": task.kind, "items": n, "score": right / n, "acc": right / n, "acc_norm": right_norm / n,
            "details": details}


@torch.no_grad()
def loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context), tokenized as lm-eval pairs them: the context's trailing
    spaces move to the continuation, whose tokens are the whole text's beyond the context's."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    target = whole[len(context_ids):]
    ids = torch.tensor([(context_ids + target)[:-1]], device=next(model.parameters()).device)
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, -len(target):].float(), dim=-1)
    return logprobs.gather(1, torch.tensor(target, device=ids.device)[:, None]).sum().item()


def _generation(task: Task, loaded, max_new_tokens: int) -> dict:
    from ..train import metrics

    prompts = [render_item(item, loaded, f"{task.path}:{i + 1}") for i, item in enumerate(task.items)]
    references = [item["reference"] for item in task.items]
    answers = metrics.generate(loaded.model, loaded.tokenizer, prompts, seq2seq=loaded.seq2seq,
                               max_new_tokens=max_new_tokens, max_input_length=loaded.max_input_tokens)
    scores = metrics.rouge(answers, references)
    return {"kind": task.kind, "items": len(answers), "score": scores["rougeL"], "exact_match": scores["exact_match"],
            "rougeL": scores["rougeL"],
            "details": [{"prompt": p, "answer": a, "reference": r} for p, a, r in zip(prompts, answers, references)]}


def render_item(item: dict, loaded, where: str) -> str:
    """The item's prompt the way the model was fine-tuned to read one (its saved template)."""
    fmt = loaded.info.prompt
    if "messages" in item:
        return render_chat(loaded.tokenizer, item["messages"], add_generation_prompt=True,
                           chat_template=fmt.chat_template)
    if "prompt" in item:
        return fmt.render_text(str(item["prompt"]))
    names = template_fields(fmt.prompt_template)
    if not names or not set(names) & set(item):
        raise DataError(f"the item has none of the model's prompt fields ({', '.join(names) or 'none'})", where=where,
                        fix="send `prompt` (a string), `messages`, or the template's own fields")
    return fmt.render_prompt({name: item.get(name) for name in names})  # left out: empty, as the server does
