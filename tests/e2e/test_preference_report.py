"""The run report of a real tiny DPO job: its reward chart and its preference rows, with the job's own numbers."""

import json

from tests.e2e.test_preference import DPO, _add_pairs
from tests.unit.test_report import check_numbers_match, check_self_contained, png_has_drawing


def test_a_dpo_jobs_report_shows_its_reward_curves_and_preference_accuracy(job, tiny):
    from tuneforge.report.charts import reward_curves
    from tuneforge.report.doc import fmt

    job.add_model(tiny("llama"))
    _add_pairs(job)
    job.hyperparameters(DPO)
    assert job.run_in_process() == 0
    data = job.base / "output" / "data"
    metrics, history = job.metrics(), json.loads((data / "log_history.json").read_text())
    html, text = (data / "report.html").read_text(), (data / "report.md").read_text()

    page = check_self_contained(html)
    assert {"chart-loss", "chart-rewards", "chart-lr"} <= set(page.images)
    png_has_drawing(page.images["chart-rewards"])
    panels = {panel: lines for panel, _, lines in reward_curves(history)}  # what the chart drew
    assert list(panels) == ["accuracy", "margin", "logps"]
    assert [len(points) for _, validation, points in panels["margin"] if not validation] == [12]  # logging_steps=1
    check_numbers_match(page, metrics)  # every number shown equals metrics.json at its key
    keys = {key for key, _, _ in page.numbers}
    assert {"preference_accuracy.before.accuracy", "preference_accuracy.after.accuracy", "final_reward_accuracy",
            "final_reward_margin", "final_chosen_logps", "final_rejected_logps"} <= keys
    assert not keys & {"perplexity", "train_perplexity"}

    accuracy = metrics["preference_accuracy"]
    before, after = accuracy["before"]["accuracy"], accuracy["after"]["accuracy"]
    assert (before, after) == (0.0, 1.0)  # the tiny model learns "blue" over "red" (tests/e2e/test_preference.py)
    assert (f"| preference accuracy (log p(chosen) > log p(rejected), 16 pairs) | {fmt(before)} | {fmt(after)} | "
            f"+{after - before:.4f} |") in text
    assert f"| reward accuracy (final evaluation) | - | {fmt(metrics['final_reward_accuracy'])} |  |" in text
    assert f"| reward margin (final evaluation) | - | {fmt(metrics['final_reward_margin'])} |  |" in text
    assert "_reward accuracy, reward margin and log-probabilities of the chosen and rejected answers" in text
    assert "perplexity |" not in text and "| validation loss (DPO) |" in text
