"""Charts as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Each chart is drawn twice (a doc.Chart): 10.5 inches wide for a desktop page, and 4.6 inches wide,
taller, with larger text and the legend below the plot for a phone, where the page shows it about
360 px wide: text of 11 pt then stays about 12 px tall on the screen."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from .doc import Chart, Rendering

COLOURS = ("#1f6fb4", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#5c7cfa", "#e67700", "#0b7285")


@dataclass(frozen=True)
class Screen:
    width: float  # inches
    dpi: int
    tick_pt: float
    label_pt: float
    legend_below: bool  # a narrow plot has no room for a legend inside it


DESKTOP = Screen(width=10.5, dpi=110, tick_pt=10, label_pt=11, legend_below=False)
PHONE = Screen(width=4.6, dpi=165, tick_pt=11, label_pt=12, legend_below=True)  # 1.5x pixels: sharp on phones


def _figure(screen: Screen, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(screen.width, height), dpi=screen.dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _rendering(figure) -> Rendering:
    from matplotlib.text import Text

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi, facecolor="white")
    renderer = figure.canvas.get_renderer()
    box = figure.bbox
    sizes = [t.get_fontsize() for t in figure.findobj(Text) if t.get_visible() and t.get_text()
             and box.overlaps(t.get_window_extent(renderer))]  # tick labels beyond the axes are not drawn
    return Rendering(buffer.getvalue(), min(sizes) * figure.dpi / 72 if sizes else 0.0)


def _twice(draw) -> Chart:
    """draw(screen) -> a figure, for the desktop and for the phone."""
    return Chart(desktop=_rendering(draw(DESKTOP)), phone=_rendering(draw(PHONE)))


def _minor_label(value: float, _position) -> str:
    """Label 2, 3 and 5 x 10^k only: every minor tick labelled overlaps next to a decade."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def _style(axes, screen: Screen, xlabel: str, ylabel: str) -> None:
    if axes.get_yscale() == "log":  # plain numbers (0.5, 2), not 5x10^-1
        from matplotlib.ticker import FuncFormatter

        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
    if xlabel == "optimizer step":  # steps are whole numbers: no tick at 2.5
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    axes.set_xlabel(xlabel, fontsize=screen.label_pt)
    axes.set_ylabel(ylabel, fontsize=screen.label_pt)
    axes.tick_params(which="both", labelsize=screen.tick_pt)
    axes.grid(True, color="#dddddd", linewidth=0.8)
    axes.spines[["top", "right"]].set_visible(False)


def _legend(figure, axes, screen: Screen, columns: int = 1) -> None:
    if screen.legend_below:
        figure.legend(loc="outside lower center", fontsize=screen.tick_pt, frameon=False, ncols=1)
    else:
        axes.legend(fontsize=screen.tick_pt, frameon=False, ncols=columns)


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


def loss_chart(history: list[dict], baseline: float | None) -> Chart | None:
    """Training and validation loss against steps; the baseline evaluation as a star at step 0."""
    series = curves(history)
    if not series["train"] and not series["validation"] and baseline is None:
        return None
    return _twice(lambda screen: _draw_loss(screen, series, baseline))


def _draw_loss(screen: Screen, series: dict, baseline: float | None):
    figure = _figure(screen, 4.2 if screen is DESKTOP else 4.4)
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
    _style(axes, screen, "optimizer step", "loss (log scale)" if axes.get_yscale() == "log" else "loss")
    _legend(figure, axes, screen)
    return figure


def lr_axis(rates) -> tuple[float, float]:
    """The learning-rate axis from 0, a little above the peak: a constant rate is a flat line at
    its value, not noise on a 0.96-1.04 axis."""
    top = max(rates)
    return 0.0, top * 1.15 if top > 0 else 1.0


def lr_chart(history: list[dict]) -> Chart | None:
    points = curves(history)["lr"]
    if len(points) < 2:
        return None
    return _twice(lambda screen: _draw_lr(screen, points))


def _draw_lr(screen: Screen, points: list[tuple[float, float]]):
    figure = _figure(screen, 2.6 if screen is DESKTOP else 2.9)
    axes = figure.add_subplot()
    steps, rates = zip(*points)
    axes.plot(steps, rates, color=COLOURS[3], linewidth=2)
    axes.set_ylim(*lr_axis(rates))
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    axes.yaxis.get_offset_text().set_fontsize(screen.tick_pt)
    _style(axes, screen, "optimizer step", "learning rate")
    return figure


def baseline_positions(count: int, last_step: float) -> list[float]:
    """Where the jobs' baseline stars go: side by side just left of step 0, so equal baselines
    (the same base model) do not hide each other."""
    gap = 0.015 * max(last_step, 1.0)
    return [-gap * index for index in range(count)]


def compare_chart(jobs: list[tuple[str, list[dict], float | None]]) -> Chart | None:
    """Several jobs' loss curves overlaid: training solid, validation dashed with dots, one colour
    per job; each job's baseline as a star at step 0."""
    drawn = [(label, curves(history), baseline) for label, history, baseline in jobs]
    if not any(series["train"] or series["validation"] for _, series, _ in drawn):
        return None
    return _twice(lambda screen: _draw_compare(screen, drawn))


def _draw_compare(screen: Screen, jobs: list[tuple[str, dict, float | None]]):
    entries = sum(bool(series[name]) for _, series, _ in jobs for name in ("train", "validation"))
    figure = _figure(screen, 4.6 if screen is DESKTOP else 3.4 + 0.25 * entries)  # the legend below grows
    axes = figure.add_subplot()
    values: list[float] = []
    last_step, stars = 1.0, []
    for index, (label, series, baseline) in enumerate(jobs):
        colour = COLOURS[index % len(COLOURS)]
        if series["train"]:
            steps, losses = zip(*series["train"])
            axes.plot(steps, losses, color=colour, linewidth=2, label=f"{label}: train")
            values += losses
            last_step = max(last_step, max(steps))
        if series["validation"]:
            steps, losses = zip(*series["validation"])
            axes.plot(steps, losses, color=colour, linewidth=2, linestyle="--", marker="o", markersize=4,
                      label=f"{label}: validation")
            values += losses
        if isinstance(baseline, (int, float)):
            stars.append((baseline, colour))
            values.append(baseline)
    for x, (baseline, colour) in zip(baseline_positions(len(stars), last_step), stars):
        axes.plot([x], [baseline], marker="*", markersize=13, color=colour, linestyle="none")
    if _use_log_scale(values):
        axes.set_yscale("log")
    _style(axes, screen, "optimizer step", "loss (log scale)" if axes.get_yscale() == "log" else "loss")
    _legend(figure, axes, screen, columns=2 if len(jobs) > 2 else 1)
    return figure


# A preference job's (DPO, ORPO, SimPO, KTO) log_history entries, as TRL names them; the evaluation's
# carry an eval_ prefix. (panel, its y label, [(key, series name)])
REWARD_PANELS = (
    ("accuracy", "reward accuracy", (("rewards/accuracies", "reward accuracy"),)),
    ("margin", "reward margin", (("rewards/margins", "reward margin"),)),
    ("logps", "log-probability", (("logps/chosen", "log p(chosen)"), ("logps/rejected", "log p(rejected)"))),
)


def reward_curves(history: list[dict]) -> list[tuple[str, str, list[tuple[str, bool, list[tuple[float, float]]]]]]:
    """The reward panels the history has data for: (panel, y label, [(series name, is validation,
    (step, value) points)]). A repeated evaluation at the same step (the final one) is kept once."""
    panels = []
    for panel, ylabel, keys in REWARD_PANELS:
        lines = []
        for key, name in keys:
            for validation in (False, True):
                points: list[tuple[float, float]] = []
                for entry in history:
                    step, value = entry.get("step"), entry.get(f"eval_{key}" if validation else key)
                    if isinstance(step, (int, float)) and isinstance(value, (int, float)) and \
                            (not points or points[-1][0] != step):
                        points.append((step, float(value)))
                if points:
                    lines.append((f"{'validation' if validation else 'train'} {name}", validation, points))
        if lines:
            panels.append((panel, ylabel, lines))
    return panels


def reward_chart(history: list[dict]) -> Chart | None:
    """A preference job's reward accuracy, reward margin and chosen/rejected log-probabilities
    against steps, one panel each (their scales differ), training solid, validation with dots."""
    panels = reward_curves(history)
    if not panels:
        return None
    return _twice(lambda screen: _draw_rewards(screen, panels))


def _draw_rewards(screen: Screen, panels: list):
    entries = sum(len(lines) for _, _, lines in panels)
    height = 2.3 * len(panels) + (0.5 if screen is DESKTOP else 0.8 + 0.25 * entries)  # the phone legend below
    figure = _figure(screen, height)
    axes_list = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    colours: dict[str, str] = {}  # one colour per quantity, its training and validation lines alike
    for axes, (panel, ylabel, lines) in zip(axes_list, panels):
        for name, validation, points in lines:
            steps, values = zip(*points)
            colour = colours.setdefault(name.split(" ", 1)[1], COLOURS[len(colours) % len(COLOURS)])
            style = dict(linestyle="--", marker="o", markersize=4) if validation else {}
            axes.plot(steps, values, color=colour, linewidth=2, label=name, **style)
        if panel == "accuracy":
            axes.set_ylim(-0.05, 1.05)
        elif panel == "margin":
            axes.axhline(0.0, color="#888888", linewidth=1)
        last = axes is axes_list[-1]
        _style(axes, screen, "optimizer step" if last else "", ylabel)
        if not screen.legend_below:
            axes.legend(fontsize=screen.tick_pt, frameon=False, ncols=2)
    if screen.legend_below:
        figure.legend(loc="outside lower center", fontsize=screen.tick_pt, frameon=False, ncols=1)
    return figure
