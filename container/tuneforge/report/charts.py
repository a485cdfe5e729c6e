"""Charts as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot global state)."""

from __future__ import annotations

import io
import math

COLOURS = ("#1f6fb4", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#5c7cfa", "#e67700", "#0b7285")
DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _minor_label(value: float, _position) -> str:
    """Label 2, 3 and 5 x 10^k only: every minor tick labelled overlaps next to a decade."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def _style(axes, xlabel: str, ylabel: str) -> None:
    if axes.get_yscale() == "log":  # plain numbers (0.5, 2), not 5x10^-1
        from matplotlib.ticker import FuncFormatter

        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
    if xlabel == "optimizer step":  # steps are whole numbers: no tick at 2.5
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(xlabel, fontsize=11)
    axes.set_ylabel(ylabel, fontsize=11)
    axes.tick_params(labelsize=10)
    axes.grid(True, color="#dddddd", linewidth=0.8)
    axes.spines[["top", "right"]].set_visible(False)


def curves(history: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """(step, value) series from the Trainer's log history: train loss, validation loss, learning
    rate. A repeated evaluation at the same step (the final one) is kept once."""
    series: dict[str, list[tuple[float, float]]] = {"train": [], "validation": [], "lr": []}
    for entry in history:
        step = entry.get("step")
        if not isinstance(step, (int, float)):
            continue
        for key, name in (("loss", "train"), ("eval_loss", "validation"), ("learning_rate", "lr")):
            value = entry.get(key)
            if isinstance(value, (int, float)) and (not series[name] or series[name][-1][0] != step):
                series[name].append((step, float(value)))
    return series


def _use_log_scale(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and len(values) > 1 and max(positive) / min(positive) > 20


def loss_chart(history: list[dict], baseline: float | None) -> bytes | None:
    """Training and validation loss against steps; the baseline evaluation as a star at step 0."""
    series = curves(history)
    if not series["train"] and not series["validation"] and baseline is None:
        return None
    figure = _figure(10.5, 4.2)
    axes = figure.add_subplot()
    values: list[float] = []
    for name, style in (("train", dict(color=COLOURS[0], linewidth=2)),
                        ("validation", dict(color=COLOURS[1], linewidth=2, marker="o", markersize=5))):
        if series[name]:
            steps, losses = zip(*series[name])
            axes.plot(steps, losses, label=f"{name} loss", **style)
            values += losses
    if isinstance(baseline, (int, float)):
        axes.plot([0], [baseline], marker="*", markersize=16, color=COLOURS[2], linestyle="none",
                  label=f"baseline evaluation (before training): {baseline:.4f}")
        values.append(baseline)
    if _use_log_scale(values):
        axes.set_yscale("log")
    _style(axes, "optimizer step", "loss (log scale)" if axes.get_yscale() == "log" else "loss")
    axes.legend(fontsize=10, frameon=False)
    return _png(figure)


def lr_axis(rates) -> tuple[float, float]:
    """The learning-rate axis from 0, a little above the peak: a constant rate is a flat line at
    its value, not noise on a 0.96-1.04 axis."""
    top = max(rates)
    return 0.0, top * 1.15 if top > 0 else 1.0


def lr_chart(history: list[dict]) -> bytes | None:
    points = curves(history)["lr"]
    if len(points) < 2:
        return None
    figure = _figure(10.5, 2.6)
    axes = figure.add_subplot()
    steps, rates = zip(*points)
    axes.plot(steps, rates, color=COLOURS[3], linewidth=2)
    axes.set_ylim(*lr_axis(rates))
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    _style(axes, "optimizer step", "learning rate")
    return _png(figure)


def baseline_positions(count: int, last_step: float) -> list[float]:
    """Where the jobs' baseline stars go: side by side just left of step 0, so equal baselines
    (the same base model) do not hide each other."""
    gap = 0.015 * max(last_step, 1.0)
    return [-gap * index for index in range(count)]


def compare_chart(jobs: list[tuple[str, list[dict], float | None]]) -> bytes | None:
    """Several jobs' loss curves overlaid: training solid, validation dashed with dots, one colour
    per job; each job's baseline as a star at step 0."""
    figure = _figure(10.5, 4.6)
    axes = figure.add_subplot()
    values: list[float] = []
    drawn, last_step, stars = False, 1.0, []
    for index, (label, history, baseline) in enumerate(jobs):
        colour = COLOURS[index % len(COLOURS)]
        series = curves(history)
        if series["train"]:
            steps, losses = zip(*series["train"])
            axes.plot(steps, losses, color=colour, linewidth=2, label=f"{label}: train")
            values += losses
            drawn, last_step = True, max(last_step, max(steps))
        if series["validation"]:
            steps, losses = zip(*series["validation"])
            axes.plot(steps, losses, color=colour, linewidth=2, linestyle="--", marker="o", markersize=4,
                      label=f"{label}: validation")
            values += losses
            drawn = True
        if isinstance(baseline, (int, float)):
            stars.append((baseline, colour))
            values.append(baseline)
    if not drawn:
        return None
    for x, (baseline, colour) in zip(baseline_positions(len(stars), last_step), stars):
        axes.plot([x], [baseline], marker="*", markersize=13, color=colour, linestyle="none")
    if _use_log_scale(values):
        axes.set_yscale("log")
    _style(axes, "optimizer step", "loss (log scale)" if axes.get_yscale() == "log" else "loss")
    axes.legend(fontsize=9, frameon=False, ncols=2 if len(jobs) > 2 else 1)
    return _png(figure)
