"""Two or more jobs side by side (a hyperparameter sweep): what each trained, the hyperparameters
that differ, the loss curves overlaid, and the metrics in one table with the best value of each row
marked, unless the jobs differ in kind, base model or data (then it says so and marks no best)."""

from __future__ import annotations

from . import charts
from .doc import Cell, Document, Image, Section, Table, Text, number
from .gather import JobOutput
from .sections import hyperparameters_of, lookup

# (label, metrics.json key (a MetricsFile attribute, dotted into its dicts), lower is better (None: neither),
#  decimals shown)
COMPARED = (
    ("validation loss before", "eval_loss_before", None, 4),
    ("validation loss after", "eval_loss", True, 4),
    ("perplexity after", "perplexity", True, 2),
    ("ROUGE-1", "rouge1", False, 4), ("ROUGE-2", "rouge2", False, 4), ("ROUGE-L", "rougeL", False, 4),
    ("ROUGE-Lsum", "rougeLsum", False, 4), ("exact match", "exact_match", False, 4),
    ("general knowledge after", "general_knowledge.after.score", False, 4),
    ("training loss", "train_loss", True, 4),
    ("steps", "steps", None, 0), ("training time (s)", "train_runtime_s", True, 2),
    ("tokens per second", "train_tokens_per_second", False, 1),
)


SAME_HYPERPARAMETER = {"epochs": "epoch"}  # JumpStart's and the Trainer's names of one setting


def differing_hyperparameters(jobs: list[JobOutput]) -> tuple[list[str], list[dict]]:
    values = [{SAME_HYPERPARAMETER.get(k, k): v for k, v in hyperparameters_of(job)[0].items()} for job in jobs]
    names = sorted({name for v in values for name in v})
    differ = [n for n in names if len({repr(v.get(n)) for v in values}) > 1]
    return differ, values


def what_was_trained(job: JobOutput) -> tuple[str, str, str]:
    """(kind, base model, data format) of a job, "-" where its output does not say."""
    r = job.recorded
    base = lookup(r, "job.base_model") or lookup(r, "base_model") or "-"  # base_model: an extra key, if any
    kind = r.task if "task" in r.model_fields_set else "text generation"  # a recorded null shows as None
    return str(kind), str(base), str(lookup(r, "data.format") or "-")


def evaluation_rows(jobs: list[JobOutput]) -> list[tuple]:
    """COMPARED rows for the tasks of the jobs' evaluation channels (metrics.json `evaluation`)."""
    names = sorted({name for job in jobs for name in (job.recorded.evaluation or {})})
    return [(f"task {name} after", f"evaluation.{name}.after.score", False, 4) for name in names]


def _metric_row(label: str, key: str, lower_better, digits: int, jobs: list[JobOutput]) -> list[Cell] | None:
    values = [lookup(job.recorded, key) for job in jobs]
    if key == "general_knowledge.after.score":  # model/tuneforge.json keeps the score alone
        values = [v if v is not None else lookup(j.recorded, "general_knowledge.after") for v, j in zip(values, jobs)]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not numbers:
        return None
    best = None  # marked only where the jobs differ
    if lower_better is not None and len(set(numbers)) > 1:
        best = min(numbers) if lower_better else max(numbers)
    cells = [number(v, key, digits, css="better" if best is not None and v == best else "") for v in values]
    return [Cell(label, css="strong"), *cells]


def _names(differ: list[str], most: int = 6) -> str:
    """The differing hyperparameters by name, or their number where a list would fill a phone's screen."""
    return ", ".join(differ) if len(differ) <= most else f"{len(differ)} hyperparameters (the table below)"


def build_comparison(jobs: list[JobOutput]) -> Document:
    labels = [job.label for job in jobs]
    differ, values = differing_hyperparameters(jobs)
    trained = [what_was_trained(job) for job in jobs]
    runs = [[Cell(job.label, css="strong"), Cell("failed" if job.failure else "succeeded",
                                                 css="worse" if job.failure else ""),
             *(Cell(v) for v in what), Cell(str(job.source))] for job, what in zip(jobs, trained)]
    mixed = [name for i, name in enumerate(("kinds", "base models", "data formats")) if len({t[i] for t in trained}) > 1]
    note = (Text(f"These jobs are not one sweep: they have different {' and '.join(mixed)}. Their numbers are "
                 "shown side by side, and no best value is marked.", css="warning") if mixed else None)
    sections = [Section("Jobs", [b for b in (note, Table(["job", "status", "kind", "base model", "data", "source"],
                                                         runs)) if b is not None])]
    if differ:
        rows = [[Cell(name, css="strong"), *(Cell(str(v.get(name, "-"))) for v in values)] for name in differ]
        sections.append(Section("Hyperparameters that differ", [Table(["hyperparameter", *labels], rows)]))
    chart = charts.compare_chart([(job.label, job.history, job.recorded.eval_loss_before) for job in jobs])
    if chart:
        sections.append(Section("Loss curves", [Image(chart, "loss curves of every job overlaid", name="chart-compare",
                                                      caption="solid: training loss; dashed: validation loss; "
                                                              "star: baseline evaluation before training")]))
    compared = [(label, key, None if mixed else lower, digits)
                for label, key, lower, digits in (*COMPARED, *evaluation_rows(jobs))]
    rows = [r for r in (_metric_row(*row, jobs) for row in compared) if r]
    if rows:
        caption = "no best marked: the jobs are not one sweep" if mixed else "green: the best of the row"
        sections.append(Section("Metrics", [Table(["metric", *labels], rows, caption=caption)]))
    subtitle = f"{len(jobs)} jobs" + (f"; they differ in {_names(differ)}" if differ else "")
    return Document("tuneforge comparison: " + " vs ".join(labels), subtitle, sections)
