"""The evaluation gate: minimum scores per task and the largest loss from the base allowed."""

from __future__ import annotations

from ..hyperparameters import parse_thresholds  # eval_min_score's form, checked when the config is read


def failures(scores: dict[str, float], before: dict[str, float] | None, min_score: dict[str, float],
             max_regression: float | None) -> list[str]:
    """What the gate refuses, each naming the task, its scores and the threshold; [] when it passes.
    `scores`/`before`: task -> headline score after / before training (or of the compared model)."""
    out = []
    for name, limit in min_score.items():
        if name not in scores:
            out.append(f"task {name!r} has a minimum score but was not scored (tasks: {', '.join(scores) or 'none'})")
        elif scores[name] < limit:
            out.append(f"task {name}: score {scores[name]:.4f} is below the minimum {limit:g}")
    if before is not None and max_regression is not None:
        for name, after in scores.items():
            if name not in before:  # a loss that cannot be measured is not let through
                out.append(f"task {name}: scored {after:.4f} but has no base score to measure a loss against, and "
                           f"the largest allowed loss is {max_regression:g} (metrics.json says why: "
                           "evaluation_skipped, evaluation_unscored)")
            elif before[name] - after > max_regression:
                out.append(f"task {name}: score fell from {before[name]:.4f} to {after:.4f}, more than the allowed "
                           f"{max_regression:g}")
    return out


def job_verdict(after: dict[str, float], before: dict[str, float], min_score_text: str,
                max_regression: float) -> dict | None:
    """The gate's verdict on a training job's headline scores (task -> score, general_knowledge
    included; the recipe's Outcome), None where no gate is set: metrics.json's evaluation_gate."""
    thresholds = parse_thresholds(min_score_text) or {}
    limit = max_regression if max_regression >= 0 else None
    if not thresholds and limit is None:
        return None
    refused = failures(after, before, thresholds, limit)
    return {"passed": not refused, "failures": refused}


def enforce(verdict: dict | None) -> None:
    """Raise EvaluationGateFailed when the verdict refuses the job (after model/ is saved)."""
    from ..errors import EvaluationGateFailed

    if verdict and verdict["failures"]:
        raise EvaluationGateFailed("; ".join(verdict["failures"]) + " (model/ was saved; this exit marks the job failed)",
                                   where="hyperparameters eval_min_score/eval_max_regression",
                                   fix="look at the report's evaluation table; lower the learning rate or epochs, "
                                   "add data, or relax the gate")
