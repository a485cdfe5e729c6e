"""Scores of one model on tasks (tasks.py): greedy answers for generation items, the
log-likelihood of each choice for multiple-choice items, computed as lm-evaluation-harness's
`hf` model computes them (same token split, no BOS added), so the numbers agree with it."""

from __future__ import annotations

import torch

from ..errors import DataError
from ..data.prompt import render_chat, template_fields
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
    return multiple_choice_scores(task, lambda context, continuation: loglikelihood(loaded.model, loaded.tokenizer,
                                                                                    context, continuation))


def multiple_choice_scores(task: Task, loglikelihood_of) -> dict:
    """acc and acc_norm of the items, `loglikelihood_of(context, continuation)` scoring each choice."""
    right = right_norm = 0
    details = []
    for item in task.items:
        context = MC_CONTEXT.format(question=item["question"])
        scores = [loglikelihood_of(context, DELIMITER + c) for c in item["choices"]]
        best = max(range(len(scores)), key=scores.__getitem__)
        best_norm = max(range(len(scores)), key=lambda i: scores[i] / len(item["choices"][i]))
        right += best == item["answer"]
        right_norm += best_norm == item["answer"]
        details.append({"question": item["question"], "chosen": best, "answer": item["answer"],
                        "loglikelihoods": [round(s, 6) for s in scores]})
    n = len(task.items)
    return {"kind": task.kind, "items": n, "score": right / n, "acc": right / n, "acc_norm": right_norm / n,
            "details": details}


def split_pair(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's split: the context's trailing spaces move to the continuation."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    return context, continuation


@torch.no_grad()
def loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context), tokenized as lm-eval pairs them: the context's trailing
    spaces move to the continuation, whose tokens are the whole text's beyond the context's."""
    context, continuation = split_pair(context, continuation)
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    target = whole[len(context_ids):]
    ids = torch.tensor([(context_ids + target)[:-1]], device=next(model.parameters()).device)
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, -len(target):].float(), dim=-1)
    return logprobs.gather(1, torch.tensor(target, device=ids.device)[:, None]).sum().item()


def _generation(task: Task, loaded, max_new_tokens: int) -> dict:
    from . import generation

    prompts = [render_item(item, loaded, f"{task.path}:{i + 1}") for i, item in enumerate(task.items)]
    answers = generation.generate(loaded.model, loaded.tokenizer, prompts, seq2seq=loaded.seq2seq,
                               max_new_tokens=max_new_tokens, max_input_length=loaded.max_input_tokens)
    return generation_scores(task, prompts, answers)


def generation_scores(task: Task, prompts: list, answers: list[str]) -> dict:
    """Exact match and ROUGE-L of the answers against the items' references (ROUGE-L is the score)."""
    from . import generation

    references = [item["reference"] for item in task.items]
    # a character cut short by the token limit: decoded as U+FFFD here, held back by a server
    answers = [answer.rstrip("\ufffd").strip() for answer in answers]
    scores = generation.rouge(answers, references)
    return {"kind": task.kind, "items": len(answers), "score": scores["rougeL"], "exact_match": scores["exact_match"],
            "rougeL": scores["rougeL"],
            "details": [{"prompt": p, "answer": a, "reference": r} for p, a, r in zip(prompts, answers, references)]}


def render_item(item: dict, loaded, where: str) -> str:
    """The item's prompt the way the model was fine-tuned to read one (its saved template)."""
    fmt = loaded.info.prompt
    if "messages" in item and fmt.takes_fields:  # an instruction fine-tune reads a chat as the server renders it
        try:
            return fmt.render_messages(item["messages"])
        except ValueError as exc:
            raise DataError(str(exc), where=where, fix="write the chat as one user message (after at most one "
                            "system message), or the template's fields") from None
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
