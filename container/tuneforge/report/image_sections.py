"""The text-to-image (DreamBooth) job's report: the same questions as a language model's page
(did it work, what changed, what was trained on what data, how fast), answered from what the
diffusion job records in metrics.json (diffusion/train.py, diffusion/facts.py) and the
before/after grid it draws.

sections.py sends a job here when its metrics.json says `"task": "text-to-image"`; the sections
every job has (status, what was trained, speed, hyperparameters) are sections.py's own."""

from __future__ import annotations

from dataclasses import dataclass

from ..metrics_file import DataFacts, ReportImages
from . import charts
from .doc import Cell, Document, Image, Section, Table, Text, fmt, number
from .gather import JobOutput
from .sections import (hyperparameter_section, hyperparameters_of, model_section, other_numbers_section, speed_section,
                       status_section)

TASK = "text-to-image"
GRID_FILE = "image_grid.png"
# (label, key before training, key after training: MetricsFile attributes): lower is better for both
BEFORE_AFTER = (
    ("denoising loss on the training images (fixed noise and timesteps)", "initial_loss", "final_loss"),
    ("fid_score against the training images", "fid_score_before", "fid_score"),
)
SHOWN_KEYS = {"initial_loss", "final_loss", "fid_score", "fid_score_before", "fid_images", "train_loss", "steps",
              "epochs", "train_runtime_s", "train_images", "train_images_per_second", "trainable_parameters",
              "instance_images", "class_images", "class_images_generated", "resolution"}


@dataclass
class SavedImage(Image):
    """A picture the job saved beside the report: report.md shows it by its file name."""
    file: str = ""


def images_section(job: JobOutput) -> Section | None:
    if not job.image_grid:
        return None
    r = job.recorded
    prompt = (r.images or ReportImages()).prompt or r.instance_prompt
    seed = hyperparameters_of(job)[0].get("seed")
    parts = [f'prompt "{prompt}"' if prompt else None, f"seed {seed}" if seed is not None else None,
             "top row: the base model, bottom row: the fine-tuned model, the same seed per column",
             f"full size: {GRID_FILE}; each picture alone: images/before-N.png, images/after-N.png"]
    caption = "; ".join(p for p in parts if p)
    return Section("Images before and after", [SavedImage(job.image_grid, "the instance prompt drawn before and after "
                                                          "fine-tuning", caption=caption, name="image-grid",
                                                          file=GRID_FILE)])


def _change(before, after) -> Cell:
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
        return Cell("")
    delta = after - before
    share = f" ({delta / before:+.1%})" if before else ""
    return Cell(f"{'+' if delta >= 0 else '-'}{fmt(abs(delta))}{share}",
                css="" if delta == 0 else ("better" if delta < 0 else "worse"))


def results_section(job: JobOutput) -> Section | None:
    r = job.recorded
    measured = [(label, before, after, getattr(r, before), getattr(r, after)) for label, before, after in BEFORE_AFTER]
    rows = [[Cell(label, css="strong"), number(b, before), number(a, after), _change(b, a)]
            for label, before, after, b, a in measured if b is not None or a is not None]
    if r.train_loss is not None:
        rows.append([Cell("training loss (mean of the last epoch's steps)", css="strong"), Cell("-"),
                     number(r.train_loss, "train_loss"), Cell("")])
    if not rows:
        return None
    notes = ["lower is better for both: the denoising loss is measured on every training image at the same "
             "timesteps and noise before and after, so the two are comparable"]
    if r.fid_score is not None:
        notes.append(f"fid_score compares {fmt(r.fid_images)} pictures of the instance prompt with the training "
                     "images (pytorch-fid's Inception-v3); with this few pictures it is a trend, not a benchmark value")
    return Section("Before and after fine-tuning", [Table(["metric", "base model", "fine-tuned", "change"], rows,
                                                          caption="; ".join(notes))])


def curves_section(job: JobOutput) -> Section | None:
    r = job.recorded
    points = [{"step": step, "loss": loss} for step, loss in r.loss_history or []
              if isinstance(step, (int, float)) and isinstance(loss, (int, float))]
    chart = charts.loss_chart(points, r.initial_loss) if points else None
    if chart is None:
        return None
    return Section("Training curves", [
        Image(chart, "training loss against optimizer steps", name="chart-loss",
              caption=f"the loss of each of the {len(points)} optimizer steps (noisy: each step draws its own noise and "
                      "timesteps); the star is the fixed-noise denoising loss before training")])


def data_section(job: JobOutput) -> Section | None:
    data = job.recorded.data
    if not isinstance(data, DataFacts):
        return None
    rows = [("instance prompt", data.instance_prompt, None),
            ("instance images", data.instance_images, "data.instance_images")]
    if data.with_prior_preservation:
        rows += [("class prompt", data.class_prompt, None),
                 ("class images", data.class_images, "data.class_images"),
                 ("of them given in class_data_dir/", data.class_images_given, "data.class_images_given"),
                 ("of them generated by the base model", data.class_images_generated, "data.class_images_generated")]
    rows += [("resolution (px)", data.resolution, "data.resolution"),
             ("crop", "center" if data.center_crop else "random", None),
             ("prior preservation", "yes" if data.with_prior_preservation else "no", None),
             ("files", ", ".join(data.files or []), None)]
    table = [[Cell(label, css="strong"), number(value, key) if key else Cell(str(value))]
             for label, value, key in rows if value not in (None, "")]
    return Section("Data", [Text(f"format: {data.format}"), Table(["", ""], table)])


def image_speed_section(job: JobOutput) -> Section | None:
    """sections.py's speed table with the images trained on and images per second after the epochs."""
    section, r = speed_section(job), job.recorded
    rows = [[Cell(label, css="strong"), number(value, key, digits), Cell(unit)]
            for label, value, key, digits, unit in (
                ("images trained on", r.train_images, "train_images", 0, "images"),
                ("images per second", r.train_images_per_second, "train_images_per_second", 2, "images/s"))
            if value is not None]
    if not rows:
        return section
    if section is None or not section.blocks or not isinstance(section.blocks[0], Table):
        return Section("Speed, memory and time per phase", [Table(["", "value", "unit"], rows)])
    table = section.blocks[0]
    at = next((i + 1 for i, row in enumerate(table.rows) if row[0].text == "epochs"), len(table.rows))
    table.rows[at:at] = rows
    return section


def build_image_document(job: JobOutput) -> Document:
    builders = (status_section, images_section, results_section, curves_section, model_section, data_section,
                image_speed_section, hyperparameter_section)
    sections = [s for s in (b(job) for b in builders) if s is not None]
    other = other_numbers_section(job, SHOWN_KEYS)
    if other:
        sections.append(other)
    return Document(f"tuneforge run report: {job.label}", f"{TASK} fine-tuning job; source: {job.source}", sections)
