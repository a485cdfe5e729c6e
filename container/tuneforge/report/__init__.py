"""The run report: one page that shows what a job did (report.html, self-contained) and the same
tables as markdown (report.md), built from the files the job writes to output/data.

Every job writes it at its end (and as far as it got on failure); `tuneforge report JOB_DIR`
rebuilds it from a finished job, also from the model.tar.gz / output.tar.gz SageMaker uploaded,
and `tuneforge report --compare A B ...` puts several jobs side by side.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .gather import JobOutput, ReportInputError, load_job

log = logging.getLogger(__name__)
HTML_NAME, MARKDOWN_NAME = "report.html", "report.md"
COMPARE_HTML, COMPARE_MARKDOWN = "compare.html", "compare.md"

__all__ = ["JobOutput", "ReportInputError", "load_job", "write_report", "write_comparison", "write_job_report"]


def _write(document, out_dir: Path, html_name: str, markdown_name: str) -> tuple[Path, Path]:
    from .html import render_html
    from .markdown import render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, markdown_path = out_dir / html_name, out_dir / markdown_name
    # written whole, then renamed: a reader never sees half a page
    for path, text in ((html_path, render_html(document)), (markdown_path, render_markdown(document, html_name))):
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    return html_path, markdown_path


def write_report(source: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """report.html and report.md for one job; into its output/data folder unless out_dir is given."""
    job = load_job(source)
    if (job.recorded.task or "text generation") == "text-to-image":  # its own sections
        from .image_sections import build_image_document as build_document
    else:
        from .sections import build_document
    return _write(build_document(job), Path(out_dir) if out_dir else job.report_dir, HTML_NAME, MARKDOWN_NAME)


def write_comparison(sources: list[str | Path], out_dir: str | Path) -> tuple[Path, Path]:
    """compare.html and compare.md for two or more jobs."""
    from .compare import build_comparison

    if len(sources) < 2:
        raise ReportInputError("--compare needs at least two jobs", where="tuneforge report --compare",
                               fix="pass two or more job folders or archives")
    jobs = [load_job(s) for s in sources]
    seen: dict[str, int] = {}
    for job in jobs:  # two sweeps' jobs can share a folder name
        seen[job.label] = seen.get(job.label, 0) + 1
        if seen[job.label] > 1:
            job.label = f"{job.label} ({seen[job.label]})"
    return _write(build_comparison(jobs), Path(out_dir), COMPARE_HTML, COMPARE_MARKDOWN)


def write_job_report(base_dir: str | Path) -> Path | None:
    """The job's own report, at its end or after a failure. Never raises: a report that cannot be
    written is logged, and the job's result stands."""
    from ..logs import never_fail

    written = never_fail(lambda: write_report(base_dir), "writing the run report")
    if written:
        log.info("run report: %s (tables also in %s)", written[0], written[1].name)
        return written[0]
    return None
