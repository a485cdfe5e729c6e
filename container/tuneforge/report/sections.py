"""One job's report as a Document: status, what was trained, the data, the curves, before/after
metrics and answers, speed and time per phase, hyperparameters. Every section shows only what the
job recorded, so a failed job's report shows as far as it got."""

from __future__ import annotations

import re

from pydantic import BaseModel

from . import charts
from .doc import Cell, Document, Image, Marked, Pre, Section, Table, Text, change_cell, fmt, number
from ..metrics_file import DataFacts, MetricsFile
from .gather import JobOutput
from .preference import PREFERENCE_KEYS, SFT_ONLY_ROWS, method_name, preference_method, preference_rows

ROUGE = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# (label, metrics.json key after training, key before training or a path into it, lower is better)
BEFORE_AFTER = (
    ("validation loss", "eval_loss", "eval_loss_before", True),
    ("perplexity", "perplexity", "perplexity_before", True),
    *((f"ROUGE-{k[5:]}", k, f"rouge_before.{k}", False) for k in ROUGE),
    ("exact match", "exact_match", "rouge_before.exact_match", False),
)
ANSWER_CHARS = 400
ANSWER_ROWS = 12  # the rest are in samples.jsonl


def lookup(data: MetricsFile | dict, path: str):
    """The value at a dotted metrics.json key: by attribute in a MetricsFile and its sub-models, by key in a dict."""
    for part in path.split("."):
        if isinstance(data, BaseModel):
            data = getattr(data, part, None)
        elif isinstance(data, dict):
            data = data.get(part)
        else:
            return None
    return data


def metrics_of(job: JobOutput) -> dict:
    """metrics.json, or the summary model/tuneforge.json keeps (all a model.tar.gz holds), as a dict:
    for the sections that go through every key (the others read job.recorded)."""
    if job.metrics:
        return job.metrics
    return dict((job.metadata or {}).get("metrics") or {})


def status_section(job: JobOutput) -> Section:
    section = Section("Status")
    if job.failure is not None:
        first, _, rest = job.failure.partition("\n")
        section.blocks.append(Text(f"Failed: {first}", css="failed"))
        if rest.strip():
            section.blocks.append(Pre(rest.strip()[-4000:], caption="details (output/failure)"))
        section.blocks.append(Text("The sections below show what the job recorded before it stopped.", css="note"))
    elif job.metrics or job.metadata:
        r = job.recorded
        section.blocks.append(Text(f"Succeeded: {fmt(r.steps)} steps, {fmt(r.epochs, 2)} epochs"
                                   if r.steps is not None else "Succeeded", css="ok"))
    r = job.recorded
    if r.already_trained:
        section.blocks.append(Text(r.already_trained, css="note"))
    if r.resumed_from:
        section.blocks.append(Text(f"resumed from {r.resumed_from}", css="note"))
    return section


def model_section(job: JobOutput) -> Section | None:
    r, meta = job.recorded, job.metadata or {}
    facts = r.job or {}
    params = r.parameters or {}
    path = facts.get("base_model_path") or meta.get("base_model_path")
    name = facts.get("base_model") or meta.get("base_model")
    rows = [("base model", f"{name} ({path})" if name and path and path != name else name),
            ("family", facts.get("family") or meta.get("model_type")),
            ("architecture", facts.get("architecture") or meta.get("architecture"))]
    if params:
        share = params["trainable"] / params["total"] if params.get("total") else None
        rows += [("parameters", fmt(params.get("total"))),
                 ("trainable", f"{fmt(params.get('trainable'))} ({share:.2%})" if share is not None else None)]
    method = facts.get("method") or (r.method if isinstance(r.method, str) else None)
    rows += [("method", method), ("precision", facts.get("precision")),
             ("quantization", r.quantization), ("engine", _engine(r)), ("hardware", facts.get("hardware"))]
    if meta:
        rows.append(("saved", "LoRA adapter (needs the base model)" if meta.get("adapter_only") else "full weights"))
    rows = [(k, v) for k, v in rows if v not in (None, "")]
    if not rows:
        return None
    return Section("What was trained", [Table(["", ""], [[Cell(k, css="strong"), Cell(str(v))] for k, v in rows])])


def _engine(r: MetricsFile) -> str | None:
    parts = [r.parallelism, f"accelerate {r.distributed_type}" if r.distributed_type else None]
    return ", ".join(p for p in parts if p) or None


def data_section(job: JobOutput) -> Section | None:
    data = job.recorded.data
    if not isinstance(data, DataFacts):
        return None
    section = Section("Data")
    rows = []
    for split, part in (("train", data.train), ("validation", data.validation)):
        if isinstance(part, dict):
            rows.append([Cell(split, css="strong"), number(part.get("rows"), f"data.{split}.rows"),
                         number(part.get("sequences"), f"data.{split}.sequences"),
                         number(part.get("tokens"), f"data.{split}.tokens"),
                         _share(part.get("trainable_share"), f"data.{split}.trainable_share"),
                         number(part.get("rows_truncated"), f"data.{split}.rows_truncated",
                                css="worse" if part.get("rows_truncated") else "")])
    files = ", ".join(str(f) for f in data.files or [])
    section.blocks.append(Text(f"format {data.format}; max_input_length {fmt(data.max_input_length)}; "
                               f"validation from {data.validation_source}; files: {files}"))
    section.blocks.append(Table(["", "rows", "sequences", "tokens", "trainable share", "truncated rows"], rows))
    warning = overlap_warning(job.recorded)
    if warning:
        section.blocks.append(warning)
    prompt = data.prompt or {}
    template = _template_text(prompt)
    if template:
        section.blocks.append(Pre(template, caption="prompt template"))
    example = (job.recorded.job or {}).get("example")
    if example:
        section.blocks.append(Marked([(str(t), bool(f)) for t, f in example],
                                     caption="one training row as the model sees it (highlighted: the tokens the loss "
                                             "learns from)"))
    return section


def _share(value, key: str) -> Cell:
    """A share as a percentage; "-" where the job recorded none (a preference job's pairs)."""
    if not isinstance(value, (int, float)):
        return Cell("-")
    return Cell(f"{value:.1%}", key, value)


def _template_text(prompt: dict) -> str:
    if prompt.get("chat_template"):
        return str(prompt["chat_template"])
    parts = [prompt.get("prompt_template"), prompt.get("demarcation"), prompt.get("completion_template")]
    return "".join(p for p in parts if isinstance(p, str))


def curves_section(job: JobOutput) -> Section | None:
    section = Section("Training curves")
    loss = charts.loss_chart(job.history, job.recorded.eval_loss_before)
    if loss:
        section.blocks.append(Image(loss, "training and validation loss against optimizer steps", name="chart-loss"))
    rewards = charts.reward_chart(job.history) if preference_method(job.recorded) else None
    if rewards:
        section.blocks.append(Image(rewards, "reward accuracy, reward margin and log-probabilities of the chosen and "
                                             "rejected answers against optimizer steps", name="chart-rewards"))
    lr = charts.lr_chart(job.history)
    if lr:
        section.blocks.append(Image(lr, "learning rate against optimizer steps", name="chart-lr"))
    return section if section.blocks else None


def metrics_section(job: JobOutput) -> Section | None:
    m = job.recorded
    method = preference_method(m)
    rows = preference_rows(m) if method else []
    for label, after_key, before_key, lower_better in BEFORE_AFTER:
        before, after = lookup(m, before_key), getattr(m, after_key)
        if (before is None and after is None) or (method and after_key in SFT_ONLY_ROWS):
            continue
        digits = digits_of(after_key)
        label = f"{label} ({method_name(method)})" if method and after_key == "eval_loss" else label
        rows.append([Cell(label, css="strong"), number(before, before_key, digits), number(after, after_key, digits),
                     change_cell(before, after, lower_better, digits)])
    knowledge = m.general_knowledge or {}
    if knowledge:
        score = {stage: r.get("score") if isinstance(r, dict) else r for stage, r in knowledge.items()}
        rows.append([Cell("general knowledge (share right)", css="strong"),
                     number(score.get("before"), "general_knowledge.before.score"),
                     number(score.get("after"), "general_knowledge.after.score"),
                     change_cell(score.get("before"), score.get("after"), False)])
    rows += evaluation_rows(m)
    for label, key, value in (("training loss", "train_loss", m.train_loss),
                              ("training perplexity", "train_perplexity", m.train_perplexity)):
        if value is not None and not (method and key in SFT_ONLY_ROWS):
            label = f"{label} ({method_name(method)})" if method and key == "train_loss" else label
            rows.append([Cell(label, css="strong"), Cell("-"), number(value, key, digits_of(key)), Cell("")])
    if not rows:
        return None
    table = Table(["metric", "base model", "fine-tuned", "change"], rows)
    blocks = (overlap_warning(m), gate_warning(m), table)
    return Section("Before and after fine-tuning", [b for b in blocks if b is not None])


def evaluation_rows(m: MetricsFile) -> list[list[Cell]]:
    """One row per task of the job's `evaluation` channel (metrics.json `evaluation`)."""
    rows = []
    for name, stages in sorted((m.evaluation or {}).items()):
        before, after = stages.get("before") or {}, stages.get("after") or {}
        result = after or before  # a YAML task names its own metric (its first in metric_list)
        metric = result.get("metric") or ("ROUGE-L" if result.get("kind") == "generation" else "accuracy")
        rows.append([Cell(f"task {name} ({metric})", css="strong"),
                     number(before.get("score"), f"evaluation.{name}.before.score"),
                     number(after.get("score"), f"evaluation.{name}.after.score"),
                     change_cell(before.get("score"), after.get("score"), False)])
    return rows


def gate_warning(m: MetricsFile) -> Text | None:
    """The evaluation gate's failures (eval_min_score, eval_max_regression), which failed the job."""
    gate = m.evaluation_gate
    if not isinstance(gate, dict) or gate.get("passed", True):
        return None
    return Text("Warning: the evaluation gate failed the job (model/ was saved): " + "; ".join(gate["failures"]) + ".",
                css="warning")


def overlap_warning(m: MetricsFile) -> Text | None:
    """Validation rows that are also training rows (metrics.json `validation_overlap`)."""
    overlap = m.validation_overlap
    if not isinstance(overlap, dict) or not overlap.get("note"):
        return None
    return Text(f"Warning: {overlap['note']}.", css="warning")


def digits_of(key: str) -> int:
    """Decimals shown: perplexities (exp of a loss, often in the hundreds) 2, losses and scores 4."""
    return 2 if "perplexity" in key else 4


def answers_section(job: JobOutput) -> Section | None:
    if not job.samples:
        return None
    prompts = [_without_markers(str(s.get("prompt", ""))) for s in job.samples]
    shown = strip_common(prompts)
    rows = [[Cell(_clean(q)), Cell(_clean(s.get("reference"))), Cell(_clean(s.get("before"))),
             Cell(_clean(s.get("after")), css=_verdict(s))] for q, s in zip(shown, job.samples)][:ANSWER_ROWS]
    notes = [f"the first {ANSWER_ROWS} of {len(prompts)} (all in samples.jsonl)" if len(prompts) > ANSWER_ROWS else "",
             "the prompt's text shared by every row (the template) is left out; it is shown under Data"
             if shown != prompts else "",
             "fine-tuned answers equal to the reference in green, others in red"
             if any(_verdict(s) for s in job.samples) else ""]
    note = "; ".join(n for n in notes if n) or None
    return Section("Answers before and after (greedy, validation rows)",
                   [Table(["prompt", "reference", "base model", "fine-tuned"], rows, caption=note, wide_text=True)])


def _verdict(sample: dict) -> str:
    """Green when the fine-tuned answer equals the reference (as exact_match counts), else red."""
    after, reference = sample.get("after"), sample.get("reference")
    if not isinstance(after, str) or not isinstance(reference, str):
        return ""
    return "better" if after.strip().lower() == reference.strip().lower() else "worse"


def strip_common(texts: list[str]) -> list[str]:
    """Each text without the whole lines every text starts and ends with (the template's fixed
    parts); texts unchanged when there is only one."""
    if len(texts) < 2:
        return texts
    prefix = _common_prefix(texts)
    start = prefix.rfind("\n") + 1  # whole lines only: never cut a word in two
    suffix = _common_prefix([t[start:][::-1] for t in texts])[::-1]
    end = len(suffix) - suffix.find("\n") if "\n" in suffix else 0
    return [t[start:len(t) - end].strip() or t for t in texts]


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


_CHAT_MARKERS = re.compile(r"<\|[A-Za-z0-9_]+\|>")  # <|im_start|>, <|im_end|>, <|eot_id|>, ...


def _without_markers(prompt: str) -> str:
    """A chat prompt as a reader reads it: the template's <|...|> markers left out, roles kept."""
    return _CHAT_MARKERS.sub("", prompt).strip()


def _clean(text) -> str:
    """Answers of an untrained model hold control characters: shown as escapes, capped in length."""
    if text is None:
        return "-"
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    return text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + " ..."


def images_section(job: JobOutput) -> Section | None:
    if not job.image_grid:
        return None
    return Section("Images before and after", [Image(job.image_grid, "generated images before and after fine-tuning",
                                                     caption="output/data/image_grid.png", name="image-grid")])


def speed_section(job: JobOutput) -> Section | None:
    r = job.recorded
    peak, checkpoints = r.peak_memory_gib or {}, r.checkpoints or {}
    rows = [("training time", r.train_runtime_s, "train_runtime_s", "s", 2),
            ("steps", r.steps, "steps", "", 0), ("epochs", r.epochs, "epochs", "", 2),
            ("tokens trained on", r.train_tokens, "train_tokens", "", 0),
            ("tokens per second", r.train_tokens_per_second, "train_tokens_per_second", "", 1),
            ("peak GPU memory", peak.get("gpu"), "peak_memory_gib.gpu", "GiB", 2),
            ("peak host memory (RSS)", peak.get("host_rss"), "peak_memory_gib.host_rss", "GiB", 2),
            ("MFU (model FLOPs utilization)", r.mfu, "mfu", "", 4),
            ("checkpoints written", checkpoints.get("written"), "checkpoints.written", "", 0),
            ("training paused for checkpoints", checkpoints.get("pause_s_total"), "checkpoints.pause_s_total", "s", 2),
            ("of them written in the background", checkpoints.get("written_in_background"),
             "checkpoints.written_in_background", "", 0),
            ("memory estimate before loading", r.memory_estimate_gib, "memory_estimate_gib", "GiB", 2)]
    table = [[Cell(label, css="strong"), number(value, key, digits), Cell(unit)]
             for label, value, key, unit, digits in rows if value is not None]
    section = Section("Speed, memory and time per phase")
    if table:
        section.blocks.append(Table(["", "value", "unit"], table))
    phases = r.phases or {}
    if phases:
        total = sum(v for v in phases.values() if isinstance(v, (int, float)))
        prows = [[Cell(name, css="strong"), number(seconds, f"phases.{name}", 2),
                  Cell(f"{seconds / total:.0%}" if total else "")] for name, seconds in phases.items()]
        section.blocks.append(Table(["phase", "seconds", "share"], prows))
    return section if section.blocks else None


def hyperparameter_section(job: JobOutput) -> Section | None:
    values, given = hyperparameters_of(job)
    if not values:
        return None
    rows = [[Cell(name, css="strong" if name in given else ""), Cell(_short(value)),
             Cell("set" if name in given else "default", css="" if name in given else "muted")]
            for name, value in sorted(values.items(), key=lambda kv: (kv[0] not in given, kv[0]))]
    return Section("Hyperparameters", [Table(["name", "value", "source"], rows,
                                             caption="set: given in hyperparameters.json; default: tuneforge's default")])


def hyperparameters_of(job: JobOutput) -> tuple[dict, set]:
    """(values, names the user set): metrics.json, else model/tuneforge.json, else the raw file."""
    recorded = job.recorded.hyperparameters
    if isinstance(recorded, dict) and "values" in recorded:
        return dict(recorded["values"]), set(recorded.get("given") or ())
    raw = job.raw_hyperparameters or {}
    values = (job.metadata or {}).get("hyperparameters")
    if isinstance(values, dict):
        return dict(values), set(raw) if raw else set()
    return {k: v for k, v in raw.items() if not k.startswith("sagemaker_")}, set(raw)


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 120 else text[:120] + " ..."


def other_numbers_section(job: JobOutput, shown: set[str]) -> Section | None:
    """Top-level numbers of metrics.json no other section shows (tasks with metrics of their own)."""
    m = metrics_of(job)
    rows = [[Cell(key, css="strong"), number(value, key)] for key, value in m.items()
            if key not in shown and isinstance(value, (int, float)) and not isinstance(value, bool)]
    return Section("Other numbers in metrics.json", [Table(["key", "value"], rows)]) if rows else None


SHOWN_KEYS = {"eval_loss", "eval_loss_before", "perplexity", "perplexity_before", *ROUGE, "exact_match", "train_loss",
              "train_perplexity", "train_runtime_s", "steps", "epochs", "train_tokens", "train_tokens_per_second",
              "mfu", "memory_estimate_gib", "quantized_layers", *PREFERENCE_KEYS}


def build_document(job: JobOutput) -> Document:
    """The report of a language-model job (a text-to-image job's: image_sections.build_image_document)."""
    task = job.recorded.task or "text generation"
    # results first (what a person opens the page for), then how they came about
    builders = (status_section, images_section, metrics_section, curves_section, model_section, data_section,
                answers_section, speed_section, hyperparameter_section)
    sections = [s for s in (b(job) for b in builders) if s is not None]
    other = other_numbers_section(job, SHOWN_KEYS)
    if other:
        sections.append(other)
    return Document(f"tuneforge run report: {job.label}", f"{task} fine-tuning job; source: {job.source}", sections)
