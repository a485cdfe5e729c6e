"""The run report from recorded job output (no training here: tests/e2e/test_report_e2e.py runs jobs),
the log lines of a job (progress, evaluations, phases) and the filtering of known noise."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import tarfile
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuneforge.contract import METRIC_DEFINITIONS
from tuneforge.logs import DropMessages, Phases, format_duration, format_eta, quiet_known_noise
from tuneforge.report import ReportInputError, load_job, write_comparison, write_job_report, write_report
from tuneforge.report.sections import lookup, strip_common


# ---------------------------------------------------------------- checks shared with the e2e tests
class _Page(HTMLParser):
    """The facts a test needs from a report page: image sources, URLs, numeric cells."""

    def __init__(self):
        super().__init__()
        self.images: dict[str, str] = {}
        self.phone_images: list[str] = []  # <picture><source srcset>: the charts' phone renderings
        self.urls: list[str] = []
        self.numbers: list[tuple[str, float, str]] = []  # (data-key, data-value, shown text)
        self._cell: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "srcset", "href", "action", "data", "poster"):
            if name in attrs:
                self.urls.append(attrs[name])
        if tag == "source":
            self.phone_images.append(attrs["srcset"])
        if tag == "img":
            self.images[attrs.get("id", f"img-{len(self.images)}")] = attrs["src"]
        if tag in ("td", "th") and "data-key" in attrs:
            self._cell = {"key": attrs["data-key"], "value": float(attrs["data-value"]), "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.numbers.append((self._cell["key"], self._cell["value"], self._cell["text"]))
            self._cell = None


def parse_page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def png_has_drawing(data_uri: str) -> tuple[int, int]:
    """Decode a data: URI as PNG and check it is not one flat colour; its size."""
    from PIL import Image

    assert data_uri.startswith("data:image/png;base64,"), data_uri[:40]
    image = Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))
    assert image.format == "PNG"
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 10, "the chart is (nearly) a single colour"
    return image.size


def shown_number(text: str) -> tuple[float, float]:
    """The number a cell shows and half a unit of its last shown digit (the rounding allowed)."""
    text = text.strip().replace(",", "")
    scale = 0.01 if text.endswith("%") else 1.0
    text = text.rstrip("%")
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (-decimals) * (10.0 ** int(exponent) if exponent else 1.0)
    return float(text) * scale, 0.5 * unit * scale * 1.0001


def check_self_contained(html: str) -> _Page:
    """No external resource can load: every src/href is a data: URI; no http(s) URL anywhere in markup."""
    page = parse_page(html)
    assert all(u.startswith("data:") for u in page.urls), [u for u in page.urls if not u.startswith("data:")]
    assert not re.search(r"<(script|link|iframe)\b", html, re.I)
    assert "url(" not in html.split("</style>")[0].split("<style>")[-1]  # no CSS-loaded resources
    return page


def check_numbers_match(page: _Page, metrics: dict) -> int:
    """Every numeric cell's exact value equals metrics.json at its key, and its text shows it."""
    assert page.numbers, "no numeric cells"
    for key, value, text in page.numbers:
        expected = lookup(metrics, key)
        assert expected is not None, key
        assert value == pytest.approx(float(expected), rel=1e-12, abs=0), key
        shown, rounding = shown_number(text)
        assert abs(shown - value) <= rounding, (key, text, value)
    return len(page.numbers)


# ---------------------------------------------------------------- a recorded job
HISTORY = [
    {"loss": 3.0, "learning_rate": 1e-3, "epoch": 0.5, "step": 1, "num_input_tokens_seen": 100},
    {"loss": 2.0, "learning_rate": 8e-4, "epoch": 1.0, "step": 5, "num_input_tokens_seen": 500},
    {"eval_loss": 2.2, "epoch": 1.0, "step": 5},
    {"loss": 1.0, "learning_rate": 4e-4, "epoch": 1.5, "step": 8, "num_input_tokens_seen": 800},
    {"loss": 0.5, "learning_rate": 1e-4, "epoch": 2.0, "step": 10, "num_input_tokens_seen": 1000},
    {"eval_loss": 0.9, "epoch": 2.0, "step": 10},
    {"train_runtime": 3.2, "train_loss": 1.6, "epoch": 2.0, "step": 10},
    {"eval_loss": 0.9, "epoch": 2.0, "step": 10},
]
METRICS = {
    "phases": {"loading data": 0.12, "tokenizing 40 rows": 0.05, "loading model": 1.5, "training": 3.3, "saving": 0.2},
    "hyperparameters": {"values": {"learning_rate": 0.001, "epoch": 2, "lora_r": 8}, "given": ["learning_rate"]},
    "data": {"format": "instruction", "files": ["train/data.jsonl"], "max_input_length": 512, "validation_source": "channel",
             "train": {"rows": 32, "sequences": 32, "tokens": 2100, "trainable_share": 0.0904, "rows_truncated": 1},
             "validation": {"rows": 8, "sequences": 8, "tokens": 520, "trainable_share": 0.09, "rows_truncated": 0},
             "prompt": {"prompt_template": "Q: {instruction}", "demarcation": "\n\n### Response:\n",
                        "completion_template": "{response}", "chat_template": None}},
    "parameters": {"total": 185280, "trainable": 1024},
    "job": {"base_model": "tiny-llama", "family": "llama", "method": "LoRA (r=8, alpha=32, dropout=0.05)",
            "hardware": "CPU (2 cores, x86_64); 1 process(es)",
            "example": [["Q: What colour is the sky?\n\n### Response:\n", False], ["Blue.</s>", True]]},
    "eval_loss_before": 3.14159, "eval_loss": 0.9, "perplexity_before": 23.1, "perplexity": 2.4596,
    "rouge_before": {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.01, "rougeLsum": 0.01, "exact_match": 0.0},
    "rouge1": 0.95, "rouge2": 0.8, "rougeL": 0.95, "rougeLsum": 0.95, "exact_match": 0.5,
    "general_knowledge": {"before": {"score": 0.5, "right": 6, "asked": 12}, "after": {"score": 0.4167, "right": 5, "asked": 12}},
    "train_loss": 1.6, "train_perplexity": 4.953, "train_runtime_s": 3.2, "steps": 10, "epochs": 2.0,
    "train_tokens": 1000, "train_tokens_per_second": 312.5, "peak_memory_gib": {"host_rss": 0.65},
    "checkpoints": {"written": 2, "pause_s_total": 0.73, "pause_s_max": 0.41, "last_mib": 12.5},
}
SAMPLES = [
    {"prompt": "Q: What colour is the sky?\n\n### Response:\n", "reference": "Blue.", "before": "ell c\x7f x", "after": "Blue."},
    {"prompt": "Q: What colour is grass?\n\n### Response:\n", "reference": "Green.", "before": "zz", "after": "Red."},
]


def write_job(base: Path, metrics: dict = METRICS, *, failure: str | None = None) -> Path:
    data = base / "output" / "data"
    data.mkdir(parents=True)
    (data / "metrics.json").write_text(json.dumps(metrics))
    (data / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    (data / "log_history.json").write_text(json.dumps(HISTORY))
    if failure:
        (base / "output" / "failure").write_text(failure)
    return base


@pytest.fixture
def recorded(tmp_path) -> Path:
    return write_job(tmp_path / "job-a" / "opt" / "ml")


# ---------------------------------------------------------------- the report
def test_report_is_self_contained_with_drawn_charts_and_the_numbers_of_metrics_json(recorded):
    html_path, md_path = write_report(recorded)
    assert html_path == recorded / "output" / "data" / "report.html" and md_path.name == "report.md"
    html = html_path.read_text()
    page = check_self_contained(html)
    assert set(page.images) == {"chart-loss", "chart-lr"}
    width, height = png_has_drawing(page.images["chart-loss"])
    assert width >= 1000 and height >= 400  # legible at 1280 px without upscaling
    png_has_drawing(page.images["chart-lr"])
    assert len(page.phone_images) == 2  # each chart drawn again for phones: narrower and taller
    for phone in page.phone_images:
        phone_width, phone_height = png_has_drawing(phone)
        assert 600 <= phone_width <= 800 and phone_height > 0.6 * phone_width
    assert check_numbers_match(page, METRICS) >= 25
    keys = {key for key, _, _ in page.numbers}
    assert {"eval_loss_before", "eval_loss", "rouge_before.rougeL", "rougeL", "general_knowledge.after.score",
            "phases.loading model", "train_tokens_per_second", "data.train.rows_truncated",
            "checkpoints.pause_s_total"} <= keys
    # before/after answers, the template and the marked example, the defaults marked
    assert "Blue." in html and "Red." in html and "ell c\\x7f x" in html
    assert "<mark>Blue.&lt;/s&gt;</mark>" in html
    assert re.search(r"<td class=\"strong\">learning_rate</td><td>0.001</td><td>set</td>", html)
    assert re.search(r"<td>lora_r</td><td>8</td><td class=\"muted\">default</td>", html)


def test_markdown_has_the_same_tables(recorded):
    _, md_path = write_report(recorded)
    text = md_path.read_text()
    assert "| validation loss | 3.1416 | 0.9000 | -2.2416 (-71.4%) |" in text
    assert "| ROUGE-L | 0.0100 | 0.9500 | +0.9400 |" in text  # a score's change without a share of 0.01
    assert "| perplexity | 23.10 | 2.46 | -20.64 (-89.4%) |" in text  # rounded as its values are
    assert "| exact match | 0.0000 | 0.5000 | +0.5000 |" in text and "| training perplexity | - | 4.95 |  |" in text
    assert "| learning_rate | 0.001 | set |" in text
    assert "⟦Blue.</s>⟧" in text and "see [report.html](report.html)" in text


def test_a_failed_job_reports_as_far_as_it_got(tmp_path):
    partial = {k: METRICS[k] for k in ("phases", "hyperparameters", "data")}
    base = write_job(tmp_path / "failed", partial, failure="DataError: train.jsonl: line 3: no `completion`. Fix: add it\n")
    html = write_report(base)[0].read_text()
    assert "Failed: DataError: train.jsonl: line 3" in html and "Before and after" not in html
    assert "Hyperparameters" in html and "tokenizing 40 rows" in html


def test_rebuilt_from_the_archives_sagemaker_uploads(recorded, tmp_path):
    with tarfile.open(tmp_path / "output.tar.gz", "w:gz") as archive:
        archive.add(recorded / "output" / "data", arcname=".")
    html_path, _ = write_report(tmp_path / "output.tar.gz", tmp_path / "from-archive")
    check_numbers_match(parse_page(html_path.read_text()), METRICS)
    # model.tar.gz alone: the metric summary and hyperparameters tuneforge.json keeps
    meta = {"base_model": "tiny-llama", "model_type": "llama", "hyperparameters": {"learning_rate": 0.001},
            "metrics": {"eval_loss_before": 3.1, "eval_loss": 0.9, "general_knowledge": {"before": 0.5, "after": 0.4}}}
    model = tmp_path / "model"
    model.mkdir()
    (model / "tuneforge.json").write_text(json.dumps(meta))
    with tarfile.open(tmp_path / "s3" / "model.tar.gz" if False else tmp_path / "model.tar.gz", "w:gz") as archive:
        archive.add(model / "tuneforge.json", arcname="tuneforge.json")
    html = write_report(tmp_path / "model.tar.gz", tmp_path / "from-model")[0].read_text()
    page = parse_page(html)
    check_numbers_match(page, meta["metrics"] | {"general_knowledge": {"after": {"score": 0.4}, "before": {"score": 0.5}}})
    assert "tiny-llama" in html


def test_bad_input_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(ReportInputError, match="no such job folder"):
        load_job(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportInputError, match="found no job output here.*Fix: pass a job folder"):
        load_job(tmp_path / "empty")
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(ReportInputError, match="cannot read the archive"):
        load_job(tmp_path / "broken.tar.gz")
    data = tmp_path / "bad" / "output" / "data"
    data.mkdir(parents=True)
    (data / "metrics.json").write_text("{oops")
    with pytest.raises(ReportInputError, match=r"metrics.json is not valid JSON \(line 1"):
        load_job(tmp_path / "bad")


def test_the_job_report_never_fails_the_job(tmp_path, caplog):
    data = tmp_path / "output" / "data"
    data.mkdir(parents=True)
    (data / "metrics.json").write_text("{oops")
    with caplog.at_level(logging.ERROR):
        assert write_job_report(tmp_path) is None
    assert "writing the run report failed (the job's result is unaffected)" in caplog.text


def test_compare_two_jobs(recorded, tmp_path):
    other = json.loads(json.dumps(METRICS))
    other["hyperparameters"]["values"]["learning_rate"] = 0.01
    other["eval_loss"] = 0.7
    b = write_job(tmp_path / "job-b" / "opt" / "ml", other)
    html_path, md_path = write_comparison([recorded, b], tmp_path / "cmp")
    html = html_path.read_text()
    page = check_self_contained(html)
    png_has_drawing(page.images["chart-compare"])
    assert "job-a" in html and "job-b" in html
    md = md_path.read_text()
    assert "| learning_rate | 0.001 | 0.01 |" in md
    assert "| validation loss after | 0.9000 | 0.7000 |" in md
    assert re.search(r'class="better num" data-key="eval_loss" data-value="0.7"', html)
    with pytest.raises(ReportInputError, match="at least two jobs"):
        write_comparison([recorded], tmp_path / "cmp")
    assert "| job-a | succeeded | text generation | tiny-llama | instruction |" in md
    assert "not one sweep" not in md


def test_compare_says_when_jobs_are_not_one_sweep_and_lists_evaluation_tasks(recorded, tmp_path):
    other = json.loads(json.dumps(METRICS))
    other["job"]["base_model"] = "SmolLM2-135M-Instruct"
    other["hyperparameters"]["values"]["epochs"] = other["hyperparameters"]["values"].pop("epoch")
    other["evaluation"] = {"trivia": {"before": {"score": 0.5}, "after": {"score": 0.75}}}
    b = write_job(tmp_path / "job-b" / "opt" / "ml", other)
    html_path, md_path = write_comparison([recorded, b], tmp_path / "cmp")
    md, html = md_path.read_text(), html_path.read_text()
    assert "not one sweep: they have different base models" in md
    assert 'class="better' not in html  # no best crowned across different base models
    assert "| task trivia after | - | 0.7500 |" in md
    assert "see [compare.html](compare.html)" in md  # the charts are on the page beside it
    assert "| epoch |" not in md and "| epochs |" not in md  # one setting under two names, equal


def test_answer_prompts_are_shown_without_chat_markers(tmp_path):
    samples = [{"prompt": f"<|im_start|>user\nWhat is {q}?<|im_end|>\n<|im_start|>assistant\n", "reference": "x",
                "before": "y", "after": "x"} for q in ("snow", "coal")]
    base = write_job(tmp_path / "chat" / "opt" / "ml")
    (base / "output" / "data" / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    md = write_report(base)[1].read_text()
    assert "What is snow?" in md and "<|im_start|>" not in md and "<|im_end|>" not in md


def test_compared_baselines_stand_side_by_side():
    from tuneforge.report.charts import baseline_positions

    assert baseline_positions(3, 200) == [0.0, -3.0, -6.0]  # equal baselines no longer hide each other
    assert baseline_positions(0, 10) == []


def test_the_learning_rate_axis_starts_at_zero():
    from tuneforge.report.charts import lr_axis, lr_chart

    assert lr_axis([1e-4, 1e-4, 1e-4]) == (0.0, pytest.approx(1.15e-4))  # constant: a flat line, not noise
    assert lr_axis([0.0, 2e-4, 1e-4]) == (0.0, pytest.approx(2.3e-4))
    chart = lr_chart([{"step": s, "learning_rate": 1e-4} for s in (1, 2, 3)])
    assert chart.desktop.png.startswith(b"\x89PNG") and chart.phone.png.startswith(b"\x89PNG")


def test_each_chart_is_drawn_for_a_desktop_and_for_a_phone_with_text_that_stays_legible():
    from tuneforge.report.charts import compare_chart, loss_chart

    history = HISTORY * 1
    for chart in (loss_chart(history, 3.1), compare_chart([("a", history, 3.1), ("b", history, 3.0)])):
        desktop_width, phone_width = (_png_size(r.png)[0] for r in (chart.desktop, chart.phone))
        # shown ~1150 px and ~360 px wide: the smallest text stays >= 11 px on either screen
        assert chart.desktop.text_px * 1136 / desktop_width >= 11
        assert chart.phone.text_px * 360 / phone_width >= 11
        assert chart.phone.text_px > chart.desktop.text_px


def _png_size(png: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(png)).size


def test_changes_are_rounded_as_their_values_and_shares_only_where_they_mean_something():
    from tuneforge.report.doc import fmt_change
    from tuneforge.report.doc import change_cell as _change

    assert _change(902.8073, 195.6027, True, 2).text == "-707.20 (-78.3%)"  # perplexity: 2 decimals
    assert _change(0.045, 1.0, False).text == "+0.9550"  # a score: no "+2122%"
    assert _change(0.4, 0.4, False).text == "no change" and _change(0.4, 0.4, False).css == "muted"
    assert _change(0.1, 2.5, True).text == "+2.4000"  # a loss grown 25-fold: the ratio says nothing more
    assert fmt_change(12345.678, 2) == "+12,345.7" and fmt_change(-0.0003) == "-0.0003"


def test_strip_common_leaves_what_differs():
    assert strip_common(["Task:\nWhat is the sky?\nAnswer:", "Task:\nWhat is the sea?\nAnswer:"]) == [
        "What is the sky?", "What is the sea?"]  # whole lines: no word is cut
    assert strip_common(["no template a", "no template b"]) == ["no template a", "no template b"]
    assert strip_common(["only one"]) == ["only one"]


# ---------------------------------------------------------------- the log
def test_known_noise_is_dropped_and_nothing_else(caplog):
    quiet_known_noise()
    quiet_known_noise()  # idempotent
    assert sum(isinstance(f, DropMessages) for f in logging.getLogger("DeepSpeed").filters) == 1
    cases = [
        ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community: No module", False),
        ("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.", False),
        ("transformers.trainer_callback", "early stopping required metric_for_best_model, but did not find eval_loss so "
                                          "early stopping is disabled", False),
        ("DeepSpeed", "Setting accelerator to CUDA", True),
        ("transformers.trainer_callback", "early stopping required metric_for_best_model, but did not find eval_bleu", True),
        ("bitsandbytes.backends.cpu.ops", "some other bitsandbytes warning", True),
        ("tuneforge.llm.recipe", "Failed to load CPU gemm_4bit_forward from kernels-community", True),
    ]
    for name, message, kept in cases:
        logger = logging.getLogger(name)
        propagate, logger.propagate = logger.propagate, True  # DeepSpeed's logger does not propagate
        try:
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger=name):
                logger.warning(message)
            assert (message in caplog.text) is kept, (name, message)
        finally:
            logger.propagate = propagate


def test_phases_time_one_after_another(caplog):
    times = iter([0.0, 1.5, 1.5, 64.0, 64.0, 70.25])
    record: dict = {}
    phases = Phases(record, clock=lambda: next(times))
    with caplog.at_level(logging.INFO, logger="tuneforge.phases"):
        phases.begin("loading data")
        phases.begin("training")
        phases.begin("saving")
        phases.end()
        phases.end()  # nothing open: no-op
    assert record == {"loading data": 1.5, "training": 62.5, "saving": 6.25}
    assert "loading data ..." in caplog.text and "training: done in 1 min 02 s" in caplog.text
    assert "saving: done in 6.25 s" in caplog.text


def test_durations_and_eta_read_like_a_clock():
    assert format_duration(0.4213) == "0.42 s" and format_duration(12.34) == "12.3 s"
    assert format_duration(3725) == "1 h 02 min"
    assert format_eta(3725) == "1:02:05" and format_eta(None) == "?"


def _state(step, total, epoch, tokens):
    return SimpleNamespace(global_step=step, max_steps=total, epoch=epoch, num_input_tokens_seen=tokens,
                           is_world_process_zero=True)


def test_one_line_per_logging_step_and_per_evaluation(capsys, monkeypatch):
    from tuneforge.llm import callbacks

    now = [100.0]  # a clock that moves only where the test moves it, however often it is read
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: now[0])
    lines = callbacks.MetricLines()
    lines.on_log(None, _state(0, 40, 0.0, 0), None, logs={"eval_before_loss": 2.5, "eval_before_runtime": 0.5})
    lines.on_train_begin(None, _state(0, 40, 0.0, 0), None)
    now[0] = 110.0
    lines.on_log(None, _state(10, 40, 0.5, 5000), None, logs={"loss": 2.0, "learning_rate": 2e-4, "epoch": 0.5})
    now[0] = 120.0
    lines.on_log(None, _state(20, 40, 1.0, 10000), None, logs={"loss": 1.5, "learning_rate": 1e-4, "epoch": 1.0})
    lines.on_log(None, _state(20, 40, 1.0, 10000), None, logs={"eval_loss": 1.25, "eval_runtime": 1.5})
    lines.on_train_end(None, _state(40, 40, 2.0, 20000), None)
    lines.on_log(None, _state(40, 40, 2.0, 20000), None, logs={"eval_loss": 1.0, "eval_runtime": 1.5})
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "baseline evaluation (before training): loss 2.5000, perplexity 12.18 (0.50 s)",
        "step 10/40 (25%) epoch 0.50 | loss 2.0000 | lr 0.0002 | 500 tokens/s | ETA 0:00:30 "
        "[metric] train_loss=2.000000 step=10 epoch=0.5",
        "step 20/40 (50%) epoch 1.00 | loss 1.5000 | lr 0.0001 | 500 tokens/s | ETA 0:00:20 "
        "[metric] train_loss=1.500000 step=20 epoch=1.0",
        "evaluation at step 20/40: loss 1.2500, perplexity 3.49 (1.50 s) [metric] eval_loss=1.250000 "
        "[metric] eval_perplexity=3.490343 step=20 epoch=1.0",
        "final evaluation (the model that is saved): loss 1.0000, perplexity 2.718 (1.50 s)",
    ]
    text = "\n".join(out)
    for name, value in (("train:loss", "1.500000"), ("validation:loss", "1.250000"), ("validation:perplexity", "3.490343")):
        regex = next(d["Regex"] for d in METRIC_DEFINITIONS if d["Name"] == name)
        assert re.findall(regex, text)[-1] == value  # SageMaker reads the last training-time value


def test_a_text_to_image_job_embeds_its_before_after_grid(tmp_path):
    from PIL import Image, ImageDraw

    grid = Image.new("RGB", (256, 128), "white")
    ImageDraw.Draw(grid).rectangle((128, 0, 255, 127), fill=(200, 40, 40))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    base = write_job(tmp_path / "t2i", {"task": "text-to-image", "initial_loss": 0.31, "final_loss": 0.12, "steps": 4})
    (base / "output" / "data" / "image_grid.png").write_bytes(buffer.getvalue())
    html = write_report(base)[0].read_text()
    page = check_self_contained(html)
    assert base64.b64decode(page.images["image-grid"].split(",", 1)[1]) == buffer.getvalue()
    assert "text-to-image fine-tuning job" in html
    check_numbers_match(page, {"initial_loss": 0.31, "final_loss": 0.12, "steps": 4})


def test_gathering_job_facts_never_fails_the_job(caplog):
    from tuneforge.report.jobfacts import describe_job

    with caplog.at_level(logging.ERROR):
        assert describe_job(SimpleNamespace(config=None)) == {}  # a recipe missing what it needs
    assert "gathering facts for the report (describe_job) failed" in caplog.text


def test_docs_name_every_filtered_message_and_the_cli_options():
    from tuneforge.cli import parser
    from tuneforge.logs import KNOWN_NOISE

    doc = (Path(__file__).resolve().parents[2] / "docs" / "report.md").read_text()
    for logger, start, _why in KNOWN_NOISE:
        assert f"| `{logger}` | {start}" in doc, (logger, start)
    report = parser()._subparsers._group_actions[0].choices["report"]
    options = {o for action in report._actions for o in action.option_strings} - {"-h", "--help"}
    assert options == {"--compare", "--out"} and all(o in doc for o in options)


# ---------------------------------------------------------------- a recorded preference (DPO) job
def _dpo_entry(step: int, prefix: str = "") -> dict:
    return {f"{prefix}rewards/accuracies": min(1.0, step / 4), f"{prefix}rewards/margins": 0.05 * step,
            f"{prefix}logps/chosen": -41.0 + 0.2 * step, f"{prefix}logps/rejected": -41.0 - 0.1 * step, "step": step}


DPO_HISTORY = ([{"loss": 0.69 - 0.01 * s, "learning_rate": 1e-3, **_dpo_entry(s)} for s in range(1, 9)]
               + [{"eval_loss": 0.6, **_dpo_entry(s, "eval_")} for s in (4, 8, 8)])  # the final evaluation twice
DPO_METRICS = {
    **{k: METRICS[k] for k in ("phases", "parameters", "job", "train_runtime_s", "steps", "epochs")},
    "hyperparameters": {"values": {"training_method": "dpo", "beta": 0.1}, "given": ["training_method"]},
    "data": {**METRICS["data"], "format": "preference", "train": {"rows": 16, "sequences": 16, "tokens": 422,
                                                                  "rows_truncated": 0}},
    "preference": {"method": "dpo", "beta": 0.1, "reference": "the base model with the LoRA adapter turned off (no copy)"},
    "preference_accuracy": {"before": {"accuracy": 0.25, "pairs": 16}, "after": {"accuracy": 0.9375, "pairs": 16}},
    "eval_loss": 0.5514, "train_loss": 0.6037, "perplexity": 1.7356, "train_perplexity": 1.83,
    "final_reward_accuracy": 1.0, "final_reward_margin": 0.3069, "final_chosen_logps": -38.85,
    "final_rejected_logps": -41.78,
}


def test_a_preference_job_shows_its_reward_chart_and_preference_rows_and_no_perplexity(tmp_path):
    base = write_job(tmp_path / "dpo" / "opt" / "ml", DPO_METRICS)
    (base / "output" / "data" / "log_history.json").write_text(json.dumps(DPO_HISTORY))
    html_path, md_path = write_report(base)
    html, text = html_path.read_text(), md_path.read_text()
    page = check_self_contained(html)
    assert set(page.images) == {"chart-loss", "chart-rewards", "chart-lr"} and len(page.phone_images) == 3
    width, height = png_has_drawing(page.images["chart-rewards"])
    assert width >= 1000 and height > 600  # three panels, one above the other
    check_numbers_match(page, DPO_METRICS)
    keys = {key for key, _, _ in page.numbers}
    assert {"preference_accuracy.before.accuracy", "preference_accuracy.after.accuracy", "final_reward_accuracy",
            "final_reward_margin", "final_chosen_logps", "final_rejected_logps"} <= keys
    assert not keys & {"perplexity", "train_perplexity", "data.train.trainable_share"}  # SFT's, not a DPO job's
    assert "| preference accuracy (log p(chosen) > log p(rejected), 16 pairs) | 0.2500 | 0.9375 | +0.6875 |" in text
    assert "| reward margin (final evaluation) | - | 0.3069 |  |" in text
    assert "| validation loss (DPO) | - | 0.5514 |  |" in text and "| training loss (DPO) | - | 0.6037 |  |" in text
    assert "perplexity |" not in text and "Other numbers" not in text  # every final_* number has its row
    assert "_reward accuracy, reward margin and log-probabilities" in text
    # an SFT job keeps its perplexity rows and gets no reward chart
    assert "| perplexity | 23.10 |" in write_report(write_job(tmp_path / "sft", METRICS))[1].read_text()


def test_reward_curves_read_trl_log_history_and_draw_legibly_for_both_screens():
    from tuneforge.report.charts import reward_chart, reward_curves

    panels = {panel: lines for panel, _, lines in reward_curves(DPO_HISTORY)}
    assert list(panels) == ["accuracy", "margin", "logps"]
    assert [(name, len(points)) for name, _, points in panels["logps"]] == [
        ("train log p(chosen)", 8), ("validation log p(chosen)", 2),  # the repeated final evaluation once
        ("train log p(rejected)", 8), ("validation log p(rejected)", 2)]
    assert panels["margin"][0][2][-1] == (8, pytest.approx(0.4))
    # KTO's rows are unpaired: no reward accuracy, the other panels stay
    kto = [{k: v for k, v in entry.items() if "accuracies" not in k} for entry in DPO_HISTORY]
    assert [panel for panel, _, _ in reward_curves(kto)] == ["margin", "logps"]
    assert reward_chart([{"loss": 1.0, "step": 1}]) is None  # an SFT history has no reward curves
    chart = reward_chart(DPO_HISTORY)
    desktop_width, phone_width = (_png_size(r.png)[0] for r in (chart.desktop, chart.phone))
    assert chart.desktop.text_px * 1136 / desktop_width >= 11 and chart.phone.text_px * 360 / phone_width >= 11
