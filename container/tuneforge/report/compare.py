"""Two or more jobs side by side (a hyperparameter sweep): the hyperparameters that differ, the loss
curves overlaid, and the metrics in one table with the best value of each row marked."""

from __future__ import annotations

from . import charts
from .doc import Cell, Document, Image, Section, Table, number
from .gather import JobOutput
from .sections import hyperparameters_of, lookup, metrics_of

# (label, metrics.json key, lower is better (None: neither), decimals shown)
COMPARED = (
    ("validation loss before", "eval_loss_before", None, 4),
    ("validation loss after", "eval_loss", True, 4),
    ("perplexity after", "perplexity", True, 4),
    ("ROUGE-1", "rouge1", False, 4), ("ROUGE-2", "rouge2", False, 4), ("ROUGE-L", "rougeL", False, 4),
    ("ROUGE-Lsum", "rougeLsum", False, 4), ("exact match", "exact_match", False, 4),
    ("general knowledge after", "general_knowledge.after.score", False, 4),
    ("training loss", "train_loss", True, 4),
    ("steps", "steps", None, 0), ("training time (s)", "train_runtime_s", True, 2),
    ("tokens per second", "train_tokens_per_second", False, 1),
)


def differing_hyperparameters(jobs: list[JobOutput]) -> tuple[list[str], list[dict]]:
    values = [hyperparameters_of(job)[0] for job in jobs]
    names = sorted({name for v in values for name in v})
    differ = [n for n in names if len({repr(v.get(n)) for v in values}) > 1]
    return differ, values


def _metric_row(label: str, key: str, lower_better, digits: int, jobs: list[JobOutput]) -> list[Cell] | None:
    values = [lookup(metrics_of(job), key) for job in jobs]
    if key == "general_knowledge.after.score":  # model/tuneforge.json keeps the score alone
        values = [v if v is not None else lookup(metrics_of(j), "general_knowledge.after") for v, j in zip(values, jobs)]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not numbers:
        return None
    best = None  # marked only where the jobs differ
    if lower_better is not None and len(set(numbers)) > 1:
        best = min(numbers) if lower_better else max(numbers)
    cells = [number(v, key, digits, css="better" if best is not None and v == best else "") for v in values]
    return [Cell(label, css="strong"), *cells]


def build_comparison(jobs: list[JobOutput]) -> Document:
    labels = [job.label for job in jobs]
    differ, values = differing_hyperparameters(jobs)
    runs = [[Cell(job.label, css="strong"), Cell("failed" if job.failure else "succeeded",
                                                 css="worse" if job.failure else ""), Cell(str(job.source))]
            for job in jobs]
    sections = [Section("Jobs", [Table(["job", "status", "source"], runs)])]
    if differ:
        rows = [[Cell(name, css="strong"), *(Cell(str(v.get(name, "-"))) for v in values)] for name in differ]
        sections.append(Section("Hyperparameters that differ", [Table(["hyperparameter", *labels], rows)]))
    chart = charts.compare_chart([(job.label, job.history, metrics_of(job).get("eval_loss_before")) for job in jobs])
    if chart:
        sections.append(Section("Loss curves", [Image(chart, "loss curves of every job overlaid", name="chart-compare",
                                                      caption="solid: training loss; dashed: validation loss; "
                                                              "star: baseline evaluation before training")]))
    rows = [r for r in (_metric_row(label, key, lower, digits, jobs) for label, key, lower, digits in COMPARED) if r]
    if rows:
        sections.append(Section("Metrics", [Table(["metric", *labels], rows, caption="green: the best of the row")]))
    subtitle = f"{len(jobs)} jobs" + (f"; they differ in {', '.join(differ)}" if differ else "")
    return Document("tuneforge comparison: " + " vs ".join(labels), subtitle, sections)
