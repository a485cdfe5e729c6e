"""The report pages in a real headless Chromium, at a desktop's width (1280 px) and a phone's (390 px):
report.html of a language-model job and of a text-to-image job, and compare.html of a sweep, all
built by real tiny jobs. Each page must fit the screen (no page-level sideways scroll), log no
console error, show its charts wide enough with text a person can read, and break no word inside.

Chromium comes from Debian's packages (`apt-get install -y chromium-headless-shell`), driven by
Playwright with executable_path; without it the test skips, except under CI (CI set), where it fails.
TUNEFORGE_REPORT_SCREENSHOTS=docs rewrites docs/report-desktop.png and docs/report-phone.png."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, Job

pytestmark = pytest.mark.slow  # three tiny training jobs, about a minute on two cores

WIDTHS = {"desktop": 1280, "phone": 390}
HEIGHT = {"desktop": 900, "phone": 844}
CHART_WIDTH = {"desktop": 1000, "phone": 330}  # the least a chart may be shown at, px
SMALLEST_TEXT_PX = 11  # a chart's smallest text as shown on the screen
CHROMIUM = ("chromium-headless-shell", "/usr/lib/chromium/chromium-headless-shell", "chromium", "chromium-browser")
INSTALL = "install it with `apt-get install -y chromium-headless-shell` (Debian/Ubuntu) and `pip install playwright`"
LANGUAGE_MODEL = {"instruction_tuned": "True", "peft_type": "none", "epoch": "2", "learning_rate": "0.003",
                  "per_device_train_batch_size": "8", "per_device_eval_batch_size": "8", "logging_steps": "1",
                  "rouge_samples": "4", "max_output_length": "8", "knowledge_check": "False"}


def _no_browser(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the report pages in a browser): {INSTALL}")
    pytest.skip(f"{reason}: {INSTALL}")


def _chromium_path() -> str:
    for name in CHROMIUM:
        found = shutil.which(name) or (name if os.access(name, os.X_OK) else None)
        if found:
            return found
    return _no_browser("no Chromium found (looked for " + ", ".join(CHROMIUM) + ")")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the Python package playwright is not installed")
    path = _chromium_path()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path)
        yield chromium
        chromium.close()


def _run(job: Job) -> Job:
    try:
        assert job.run_in_process() == 0, job.failure.read_text() if job.failure.exists() else ""
    finally:
        os.environ.pop("SAGEMAKER_BASE_DIR", None)  # run() sets it for its children
    return job


def _language_model_job(folder: Path, **hyperparameters) -> Job:
    from tuneforge.tiny import tiny_model

    job = Job(folder / "opt" / "ml")
    job.add_model(tiny_model("llama"))
    job.add_sample_data("instruction", n_train=32, n_val=8)
    job.hyperparameters({**LANGUAGE_MODEL, **hyperparameters})
    return _run(job)


def _text_to_image_job(folder: Path) -> Job:
    import torch

    from tests.diffusion.conftest import FAST, dreambooth_job
    from tuneforge.diffusion.tiny import tiny_pipeline

    job = Job(folder / "opt" / "ml")
    dreambooth_job(job, tiny_pipeline(), {**FAST, "max_steps": "8"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as tests/diffusion do: faster on shared cores
    try:
        return _run(job)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """The pages the jobs wrote themselves, and compare.html from `tuneforge report --compare`."""
    from tuneforge.report import write_comparison

    root = tmp_path_factory.mktemp("report-pages")
    fast = _language_model_job(root / "lr-0.003")
    slow = _language_model_job(root / "lr-0.0005", learning_rate="0.0005")
    image = _text_to_image_job(root / "dreambooth")
    compare_html, _ = write_comparison([fast.base, slow.base, image.base], root / "sweep")
    return {"language model": fast.base / "output" / "data" / "report.html",
            "text to image": image.base / "output" / "data" / "report.html",
            "compare": compare_html}


# every chart: which rendering the browser chose, its width on the screen, its smallest text there
CHARTS_JS = """() => [...document.querySelectorAll('picture img')].map(img => {
  const source = img.parentElement.querySelector('source');
  const phone = img.currentSrc === source.srcset;
  const width = img.getBoundingClientRect().width;
  const textPx = parseFloat(phone ? img.dataset.phoneTextPx : img.dataset.textPx);
  return {id: img.id, phone, width, loaded: img.complete && img.naturalWidth > 0,
          text: textPx * width / img.naturalWidth};
})"""

# words (letters and digits, up to 24: longer runs are an untrained model's noise, not words) whose
# letters lie on more than one line
BROKEN_WORDS_JS = """() => {
  const broken = [];
  const walker = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const match of node.data.matchAll(/[A-Za-z0-9]{2,24}/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.bottom)));
      if (tops.size > 1) broken.push(match[0] + ' in "' + node.data.slice(0, 60) + '"');
    }
  }
  return broken;
}"""

SCROLLING_TABLES_JS = """() => [...document.querySelectorAll('.scroll')].filter(box => box.scrollWidth > box.clientWidth + 1)
  .map(box => box.querySelector('table').className + ': ' + box.textContent.trim().slice(0, 50))"""


def _open(browser, path: Path, screen: str):
    page = browser.new_page(viewport={"width": WIDTHS[screen], "height": HEIGHT[screen]})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: errors.append(f"loaded {request.url[:80]}")
            if not request.url.startswith(("data:", "file:")) else None)
    page.goto(path.as_uri(), wait_until="load")
    return page, errors


@pytest.mark.parametrize("screen", WIDTHS)
@pytest.mark.parametrize("name", ["language model", "text to image", "compare"])
def test_the_page_fits_the_screen_with_legible_charts(browser, pages, name, screen, tmp_path):
    page, errors = _open(browser, pages[name], screen)
    try:
        width = page.evaluate("innerWidth")
        assert width == WIDTHS[screen]
        scroll_width = page.evaluate("document.scrollingElement.scrollWidth")
        assert scroll_width <= width, f"{name} scrolls sideways at {width} px: the page is {scroll_width} px wide"
        assert errors == [], errors

        charts = page.evaluate(CHARTS_JS)
        expected = {"language model": {"chart-loss", "chart-lr"}, "compare": {"chart-compare"}}.get(name)
        if expected:
            assert {c["id"] for c in charts} >= expected
        for chart in charts:
            assert chart["loaded"], chart
            assert chart["phone"] is (screen == "phone"), chart  # the rendering drawn for this screen
            assert chart["width"] >= CHART_WIDTH[screen], chart
            assert chart["text"] >= SMALLEST_TEXT_PX, f"{chart['id']}: text {chart['text']:.1f} px tall at {width} px"

        assert page.evaluate(BROKEN_WORDS_JS) == []
        scrolling = page.evaluate(SCROLLING_TABLES_JS)
        if screen == "desktop":
            assert scrolling == []  # a desktop shows every table whole
        else:
            assert not [s for s in scrolling if s.startswith("wide")]  # the answers: cards as wide as the screen
        if name == "language model":
            _screenshot(page, screen, tmp_path)
    finally:
        page.close()


def _screenshot(page, screen: str, tmp_path: Path) -> None:
    """The top of the page (results and the first chart), as docs/report.md shows it."""
    from PIL import Image

    folder = Path(os.environ.get("TUNEFORGE_REPORT_SCREENSHOTS") or tmp_path)
    folder = folder if folder.is_absolute() else REPO / folder
    path = folder / f"report-{screen}.png"
    page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": WIDTHS[screen],
                                                          "height": 1250 if screen == "desktop" else 1560})
    with Image.open(path) as shot:  # 256 colours: a page of text and lines stays sharp, a tenth of the size
        shot.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    assert path.stat().st_size > 10_000
