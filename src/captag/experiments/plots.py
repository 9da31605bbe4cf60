"""PNG plots for the study report: training curves, per-class F1, F1 against size, sweeps.

Each function takes plain numbers (already parsed) and writes one PNG. Figures are drawn
with matplotlib's Agg canvas directly (no pyplot), so nothing needs a display and no
global figure state is kept between plots.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

DPI = 100
MAX_LABEL = 28


def new_figure(width: float, height: float, rows: int = 1, cols: int = 1):
    """A figure on the Agg canvas and its axes as a flat list."""
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    return figure, [ax for line in axes for ax in line]


def save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    widen_to_fit(figure)
    figure.savefig(path, format="png")
    return path


def widen_to_fit(figure: Figure, tries: int = 6) -> None:
    """Widen the figure until every text in it (a long model name, say) ends inside it."""
    for _ in range(tries):
        renderer = figure.canvas.get_renderer()
        right = max((t.get_window_extent(renderer).x1 for t in figure.findobj(Text)
                     if t.get_visible() and t.get_text()), default=0.0)
        if right <= figure.bbox.x1:
            return
        width, height = figure.get_size_inches()
        figure.set_size_inches(width * right / figure.bbox.x1 * 1.02, height)
        figure.tight_layout()


def short(text: str, limit: int = MAX_LABEL) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def present(xs: list, ys: list) -> tuple[list, list]:
    """The (x, y) pairs whose y is a finite number."""
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
    return [x for x, _ in pairs], [y for _, y in pairs]


def curves_plot(epochs: list[dict], path: Path, title: str) -> Path:
    """Train/val loss (left) and val F1 samples/micro/macro (right) per epoch.

    `epochs` holds one dict per epoch with float (or None) values under metrics.csv's names.
    """
    figure, (loss_ax, f1_ax) = new_figure(10, 3.6, 1, 2)
    x = [e["epoch"] for e in epochs]
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        loss_ax.plot(*present(x, [e.get(key) for e in epochs]), marker="o", label=label)
    for key, label in (("val_f1_samples", "F1 samples"), ("val_f1_micro", "F1 micro"),
                       ("val_f1_macro", "F1 macro")):
        f1_ax.plot(*present(x, [e.get(key) for e in epochs]), marker="o", label=label)
    loss_ax.set(title="loss", xlabel="epoch", ylabel="BCE loss")
    f1_ax.set(title="validation F1", xlabel="epoch", ylabel="F1")
    for ax in (loss_ax, f1_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(short(title, 80))
    return save(figure, path)


def per_class_plot(series: dict[str, list[dict]], path: Path, title: str) -> Path:
    """Horizontal bars of per-class F1, one bar per series (model) for each class.

    `series` maps a model name to its per-class rows ({label, name, support, f1, ...});
    classes follow the first series' order. A long title wraps onto more lines.
    """
    names = list(series)
    classes = class_order(series)
    height = 0.8 / max(len(names), 1)
    figure, (ax,) = new_figure(9, 1.2 + len(classes) * max(0.32, 0.16 * len(names)))
    for number, name in enumerate(names):
        f1 = {key: row.get("f1") for key, row in class_rows(series[name]).items()}
        ys = [index + (number - (len(names) - 1) / 2) * height for index in range(len(classes))]
        values = [f1.get(key) if f1.get(key) is not None else 0.0 for key, _ in classes]
        bars = ax.barh(ys, values, height=height, label=short(name, 40))
        if len(names) == 1:
            ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=7)
    ax.set_yticks(range(len(classes)), [label for _, label in classes], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="validation F1 (tuned threshold)", title=textwrap.fill(title, 90))
    ax.grid(axis="x", alpha=0.3)
    if len(names) > 1:
        ax.legend(fontsize=8, loc="best")
    return save(figure, path)


def class_key(row: dict) -> str:
    """A per-class row's label ID as text (its name when it has no ID)."""
    return str(row.get("label", row.get("name")))


def class_rows(rows: list[dict]) -> dict[str, dict]:
    return {class_key(row): row for row in rows}


def class_order(series: dict[str, list[dict]]) -> list[tuple[str, str]]:
    """(key, tick label) for every class seen, in first-seen order; the label shows support."""
    order: dict[str, str] = {}
    for rows in series.values():
        for key, row in class_rows(rows).items():
            if key not in order:
                support = row.get("support")
                suffix = f" (n={support})" if support not in (None, "") else ""
                order[key] = f"{short(row.get('name', key))}{suffix}"
    return list(order.items())


# neighbours' numbers point apart, each tied to its point by a thin line
OFFSETS = ((9, 7), (9, -15), (-17, 7), (-17, -15))


def size_scatter(points: list[tuple[str, float, float]], path: Path, budget_mb: float,
                 title: str) -> Path:
    """F1 samples against size in MB, budget as a vertical line. Each point carries a number
    (best F1 first) that a list beside the plot resolves to the model's full name, so that no
    name is cut off and close points stay readable."""
    ranked = sorted(points, key=lambda p: -p[2])
    figure = Figure(figsize=(13, max(5.0, 1.2 + 0.24 * len(ranked))), dpi=DPI)
    FigureCanvasAgg(figure)
    ax, names = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    by_size = sorted(range(len(ranked)), key=lambda i: (ranked[i][1], ranked[i][2]))
    for order, i in enumerate(by_size):
        _, size, f1 = ranked[i]
        ax.scatter([size], [f1], s=36, color=f"C{i % 10}")
        ax.annotate(str(i + 1), (size, f1), textcoords="offset points", fontsize=8,
                    xytext=OFFSETS[order % len(OFFSETS)], color=f"C{i % 10}",
                    arrowprops=dict(arrowstyle="-", color=f"C{i % 10}", lw=0.6, shrinkB=3))
    ax.axvline(budget_mb, color="red", linestyle="--", label=f"{budget_mb:g} MB budget")
    largest = max([size for _, size, _ in ranked] + [budget_mb])
    ax.set_xlim(0, largest * 1.1)
    ax.margins(y=0.1)
    ax.set(xlabel="size (MB = 2**20 bytes; the model file where saved)",
           ylabel="validation F1 samples", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    names.axis("off")
    step = 1 / max(len(ranked), 1)
    for i, (label, size, f1) in enumerate(ranked):
        names.text(0, 1 - (i + 0.5) * step, f"{i + 1:>2}. {label}  ({f1:.3f}, {size:.0f} MB)",
                   fontsize=8, color=f"C{i % 10}", va="center", family="monospace")
    return save(figure, path)


def sweep_plot(series: dict[str, list[tuple]], path: Path, title: str) -> Path:
    """One panel per swept option: F1 samples against the option's values.

    `series` maps an option to (value, f1) pairs; numbers are drawn on a numeric axis
    (log scale when they span a factor of 10 or more), anything else as categories.
    """
    options = list(series)
    cols = min(len(options), 3)
    rows = math.ceil(len(options) / cols)
    figure, axes = new_figure(4.2 * cols, 3.4 * rows, rows, cols)
    for ax, option in zip(axes, options):
        sweep_panel(ax, option, series[option])
    for ax in axes[len(options):]:
        ax.set_visible(False)
    figure.suptitle(title)
    return save(figure, path)


def sweep_panel(ax, option: str, pairs: list[tuple]) -> None:
    numeric = all(isinstance(x, (int, float)) for x, _ in pairs)
    if numeric:
        pairs = sorted(pairs, key=lambda pair: pair[0])
        xs = [x for x, _ in pairs]
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs], fontsize=8)
        ax.minorticks_off()
    else:
        xs = list(range(len(pairs)))
        ax.set_xticks(xs, [short(x, 16) for x, _ in pairs], fontsize=8, rotation=20)
    ys = [y for _, y in pairs]
    ax.plot(xs, ys, marker="o")
    for x, y in zip(xs, ys):
        ax.annotate(f"{y:.4f}", (x, y), textcoords="offset points", xytext=(0, 5),
                    ha="center", fontsize=7)
    ax.margins(x=0.12, y=0.2)
    ax.set(xlabel=option, ylabel="validation F1 samples")
    ax.grid(alpha=0.3)
