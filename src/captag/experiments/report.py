"""Study report: a study's results.csv rows as report.md and report.html with PNG plots.

    OUT/report.md     title, what was measured, the best model, one table per group
    OUT/report.html   the same, self-contained (inline CSS), with <img> tags to the PNGs
    OUT/plots/*.png   training curves per run, per-class F1, F1 against size, sweep plots

Tables follow the seed study's Table 1 (model, F1, training time, prediction time, size
under the 100 MB budget). Rows may come straight from a CSV (every value a string) and
skipped or failed runs have empty metrics; they are listed last with their status, and
randomly initialised encoders show as weights "none (random init)".

Label names come from each run folder's labels.json. On data other than COMP5329 the report
names its labels and leaves out what only COMP5329 has (the competition, the seed's published
F1). Per-class plots show at most the 30 labels with most validation rows, and say so; the best
model's per-class table then lists every label.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
import re
from collections import Counter
from pathlib import Path

from captag.data.labels import LABEL_IDS, LabelMap
from captag.errors import CaptagError
from captag.experiments import plots as draw

log = logging.getLogger(__name__)

SEED_BEST_F1 = 0.8966
BUDGET_MB = 100.0  # captag.evaluation.size.BUDGET_MB, not imported here as that pulls in torch
GROUP_ORDER = ("compare", "sweep", "optuna", "ablation")
GROUP_TITLES = {
    "compare": "Model comparison",
    "sweep": "Hyperparameter sweep",
    "optuna": "Optuna search",
    "ablation": "Ablation: image-only and text-only against fused",
}
SWEEP_OPTIONS = ("model", "mode", "image_encoder", "text_encoder", "batch_size", "lr",
                 "head_lr", "epochs")
MAX_COMPARE_CLASSES_MODELS = 6
MAX_PLOT_CLASSES = 30  # labels in a per-class plot: the most frequent ones
MAX_NAMED_LABELS = 30  # labels named in the data note; more are listed in the per-class table
MAX_STATUS = 160
RANDOM_WEIGHTS = "none (random init)"
MISSING = "-"


# ---- values -------------------------------------------------------------------------------

def number(value) -> float | None:
    """A float from a number or a CSV string; None for empty, non-numeric or NaN values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        result = float(str(value).strip())
    except ValueError:
        return None
    return result if math.isfinite(result) else None


def f1_text(value) -> str:
    value = number(value)
    return MISSING if value is None else f"{value:.4f}"


def one_decimal(value) -> str:
    value = number(value)
    return MISSING if value is None else f"{value:.1f}"


def general(value) -> str:
    """Learning rates, batch sizes, epochs: as short as they can be written (a word such as
    auto as it is)."""
    figure = number(value)
    if figure is None:
        return str(value) if isinstance(value, str) and value.strip() else MISSING
    return f"{figure:g}"


def text(value) -> str:
    value = " ".join(str(value if value is not None else "").split())
    return value or MISSING


def yes_no(value) -> str:
    word = str(value if value is not None else "").strip().lower()
    if word in ("true", "1", "yes"):
        return "yes"
    if word in ("false", "0", "no"):
        return "no"
    return MISSING


def weights_text(value) -> str:
    value = text(value)
    return RANDOM_WEIGHTS if value == "none" else value


def status_text(value) -> str:
    value = text(value)
    return value if len(value) <= MAX_STATUS else value[: MAX_STATUS - 1] + "…"


def model_label(row: dict) -> str:
    """The model name, with its encoders when the name alone does not say them."""
    model = text(row.get("model"))
    if model not in ("fusion", "image-only", "text-only"):
        return model
    encoders = [text(row.get(key)) for key in ("image_encoder", "text_encoder")]
    encoders = [name for name in encoders if name != MISSING]
    return f"{model}: {' + '.join(encoders)}" if encoders else model


# ---- rows ---------------------------------------------------------------------------------

def read_results(path: str | Path) -> list[dict]:
    """The rows of a results.csv, every value a string."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def f1_of(row: dict) -> float | None:
    return number(row.get("f1_samples"))


def is_ok(row: dict) -> bool:
    status = text(row.get("status")).lower()
    return status == "ok" or (status == MISSING and f1_of(row) is not None)


def finished(rows: list[dict]) -> list[dict]:
    """The ok rows that have an F1 samples score."""
    return [row for row in rows if is_ok(row) and f1_of(row) is not None]


def sort_rows(rows: list[dict]) -> list[dict]:
    """Ok rows by F1 samples, best first (no score last); then the others in their order."""
    ok = [row for row in rows if is_ok(row)]
    ok.sort(key=lambda row: -(f1_of(row) if f1_of(row) is not None else -math.inf))
    return ok + [row for row in rows if not is_ok(row)]


def best_row(rows: list[dict]) -> dict | None:
    done = finished(rows)
    return max(done, key=f1_of) if done else None


def group_of(row: dict) -> str:
    return str(row.get("group") or "").strip() or "other"


def grouped(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """(group, rows), known groups first in GROUP_ORDER, the others in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(group_of(row), []).append(row)
    order = [g for g in GROUP_ORDER if g in groups] + [g for g in groups if g not in GROUP_ORDER]
    return [(group, groups[group]) for group in order]


def is_search(group: str) -> bool:
    """Groups whose rows differ in hyperparameters, so their tables show them."""
    return group.startswith(("sweep", "optuna"))


def group_title(group: str) -> str:
    title = GROUP_TITLES.get(group) or GROUP_TITLES.get(group.split("-")[0].split("_")[0])
    return f"{title} ({group})" if title else f"Group {group}"


# ---- run folders ----------------------------------------------------------------------------

def find_run_dir(row: dict, out_dir: Path) -> Path | None:
    """The row's run folder: run_dir as given, or relative to out_dir, or out_dir/runs/RUN."""
    candidates = []
    run_dir = str(row.get("run_dir") or "").strip()
    if run_dir:
        candidates += [Path(run_dir), out_dir / run_dir]
    name = str(row.get("run") or "").strip()
    if name:
        candidates.append(out_dir / "runs" / name)
    return next((path for path in candidates if path.is_dir()), None)


def read_metrics(run_dir: Path | None) -> list[dict]:
    """metrics.csv as one dict of floats (None where missing) per epoch; [] without one."""
    path = run_dir / "metrics.csv" if run_dir else None
    if path is None or not path.is_file():
        return []
    epochs = []
    for line in read_results(path):
        values = {key: number(value) for key, value in line.items() if key}
        if values.get("epoch") is not None:
            epochs.append(values)
    return epochs


def read_per_class(run_dir: Path | None) -> list[dict]:
    """summary.json's "val_per_class" rows with f1 as a float (None where missing), each named
    from the run's labels.json."""
    path = run_dir / "summary.json" if run_dir else None
    if path is None or not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text()).get("val_per_class") or []
    except (ValueError, AttributeError):
        log.warning("could not read %s", path)
        return []
    labels = run_labels(run_dir)
    names = {str(i): n for i, n in zip(labels.ids, labels.names)} if labels else {}
    return [{**row, "f1": number(row.get("f1")),
             "name": names.get(str(row.get("label")), row.get("name", row.get("label")))}
            for row in rows if isinstance(row, dict)]


def run_labels(run_dir: Path | None) -> LabelMap | None:
    """The run's labels.json; None without a readable one."""
    path = run_dir / "labels.json" if run_dir else None
    if path is None or not path.is_file():
        return None
    try:
        return LabelMap.load(path)
    except CaptagError:
        log.warning("could not read %s", path)
        return None


def study_labels(rows: list[dict], out_dir: Path) -> LabelMap | None:
    """The labels the study's runs learned: the labels.json of the first run folder that has
    one (best run first); None if no run folder has one."""
    for row in sort_rows(rows):
        labels = run_labels(find_run_dir(row, out_dir))
        if labels is not None:
            return labels
    return None


def is_comp5329(labels: LabelMap | None, comp5329: bool | None = None) -> bool:
    """Whether the runs learned COMP5329's labels (integer IDs); without a labels.json, the
    caller's `comp5329` answer, and COMP5329 if it has none."""
    if labels is not None:
        return tuple(labels.ids) == LABEL_IDS
    return True if comp5329 is None else comp5329


# ---- sweeps ---------------------------------------------------------------------------------

def option_key(value):
    """A value to compare options by: 1e-4 and "0.0001" are the same learning rate."""
    found = number(value)
    return found if found is not None else text(value)


def base_point(rows: list[dict]) -> dict:
    """The most common value of each option (ties go to the earliest row): the sweep's base."""
    return {option: Counter(option_key(row.get(option)) for row in rows).most_common(1)[0][0]
            for option in SWEEP_OPTIONS}


def differing(row: dict, base: dict) -> list[str]:
    return [option for option in SWEEP_OPTIONS if option_key(row.get(option)) != base[option]]


def sweep_series(rows: list[dict]) -> dict[str, list[tuple]]:
    """{option: [(value, f1 samples)]} for each option varied alone from the base point.

    A row that differs from the base in one option joins that option's line, which
    also holds the base row itself; rows differing in several options are left out.
    """
    done = finished(rows)
    if len(done) < 2:
        return {}
    base = base_point(done)
    base_rows = [row for row in done if not differing(row, base)]
    series: dict[str, list[tuple]] = {}
    for row in done:
        changed = differing(row, base)
        if len(changed) == 1:
            series.setdefault(changed[0], []).append((option_key(row.get(changed[0])), f1_of(row)))
    for option, pairs in series.items():
        if base_rows:
            pairs.append((base[option], f1_of(base_rows[0])))
    return series


# ---- plots ----------------------------------------------------------------------------------

class Plots:
    """Draws PNGs under OUT/plots with unique file names; a failed plot is logged, not raised."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.folder = out_dir / "plots"
        self.used: set[str] = set()
        self.curves: dict[Path, str | None] = {}

    def path(self, stem: str) -> Path:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "plot"
        name, count = stem, 1
        while name in self.used:
            count += 1
            name = f"{stem}-{count}"
        self.used.add(name)
        return self.folder / f"{name}.png"

    def draw(self, stem: str, function, data, title: str) -> str | None:
        """The PNG's path relative to OUT, or None if it could not be drawn."""
        path = self.path(stem)
        try:
            function(data, path, title)
        except Exception:  # one bad plot must not cost the whole report
            log.warning("could not draw %s", path, exc_info=True)
            return None
        return path.relative_to(self.out_dir).as_posix()

    def run_curves(self, row: dict) -> str | None:
        """Loss and F1 curves of one ok run (once per run folder)."""
        run_dir = find_run_dir(row, self.out_dir)
        if run_dir is None:
            return None
        if run_dir not in self.curves:
            epochs = read_metrics(run_dir)
            title = f"{run_dir.name} — {model_label(row)}"
            self.curves[run_dir] = (self.draw(f"curves-{run_dir.name}", draw.curves_plot,
                                              epochs, title) if epochs else None)
        return self.curves[run_dir]


def scatter(data, path, title):
    return draw.size_scatter(data, path, BUDGET_MB, title)


def size_of(row: dict) -> float | None:
    """The size checked against the budget: the model file's MB, else the parameters' MB."""
    size = number(row.get("model_file_mb"))
    return size if size is not None else number(row.get("size_mb"))


def per_class_series(rows: list[dict], out_dir: Path) -> dict[str, list[dict]]:
    """{run name: per-class rows} for the rows whose summary.json has them."""
    series = {}
    for row in rows:
        classes = read_per_class(find_run_dir(row, out_dir))
        if classes:
            series[text(row.get("run"))] = classes
    return series


def by_support(rows: list[dict]) -> list[dict]:
    """Per-class rows, most validation rows first (ties keep the label order)."""
    return sorted(rows, key=lambda row: -(number(row.get("support")) or 0))


def most_frequent(series: dict[str, list[dict]],
                  limit: int = MAX_PLOT_CLASSES) -> tuple[dict[str, list[dict]], str]:
    """The series cut to the `limit` labels with most validation rows (in the first series
    that has them), most first, and a note for the plot's title; with `limit` labels or fewer,
    the series as they are and no note."""
    support: dict[str, float] = {}
    for rows in series.values():
        for row in rows:
            support.setdefault(draw.class_key(row), number(row.get("support")) or 0)
    if len(support) <= limit:
        return series, ""
    keep = sorted(support, key=lambda key: -support[key])[:limit]
    rank = {key: place for place, key in enumerate(keep)}
    cut = {name: sorted((row for row in rows if draw.class_key(row) in rank),
                        key=lambda row: rank[draw.class_key(row)])
           for name, rows in series.items()}
    return cut, f": the {limit} most frequent of {len(support)} labels (by validation rows)"


def per_class_image(plots: Plots, stem: str, series: dict[str, list[dict]],
                    caption: str) -> tuple | None:
    """A per-class F1 plot of at most MAX_PLOT_CLASSES labels; its caption says when it shows
    only the most frequent ones."""
    series, note = most_frequent(series)
    return image(plots, stem, draw.per_class_plot, series, caption + note)


# ---- document -------------------------------------------------------------------------------
# A report is a list of blocks: ("h1" | "h2" | "h3" | "p", text), ("img", path, caption)
# and ("table", headers, cells, row_classes); to_markdown and to_html render them.

def column(header: str, key: str, format_):
    return header, lambda row: format_(row.get(key))


BASE_COLUMNS = [
    column("run", "run", text),
    ("model", model_label),
    column("mode", "mode", text),
]
SEARCH_COLUMNS = [
    column("batch size", "batch_size", general),
    column("lr", "lr", general),
    column("head lr", "head_lr", general),
    column("epochs", "epochs", general),
]
SCORE_COLUMNS = [
    column("F1 samples", "f1_samples", f1_text),
    column("F1 micro", "f1_micro", f1_text),
    column("F1 macro", "f1_macro", f1_text),
    column("mAP", "map", f1_text),
    column("train time (s)", "train_seconds", one_decimal),
    column("prediction time (s)", "predict_seconds", one_decimal),
    column("size (MB)", "size_mb", one_decimal),
    column("file (MB)", "model_file_mb", one_decimal),
    column("within budget", "within_budget", yes_no),
    column("weights", "weights", weights_text),
    column("status", "status", status_text),
]
NUMERIC_HEADERS = {header for header, _ in SEARCH_COLUMNS + SCORE_COLUMNS[:8]} | {
    "validation rows", "precision", "recall", "F1", "AP"}  # the per-class table's


def columns_for(group: str) -> list:
    return BASE_COLUMNS + (SEARCH_COLUMNS if is_search(group) else []) + SCORE_COLUMNS


def row_class(row: dict) -> str:
    classes = [] if is_ok(row) else ["notok"]
    if text(row.get("weights")) == "none":
        classes.append("random")
    return " ".join(classes)


def table_block(rows: list[dict], columns: list) -> tuple:
    rows = sort_rows(rows)
    cells = [[format_(row) for _, format_ in columns] for row in rows]
    return "table", [header for header, _ in columns], cells, [row_class(row) for row in rows]


def measured_note(rows: list[dict], comp5329: bool = True) -> str:
    counts = Counter("ok" if is_ok(row) else text(row.get("status")).split(":")[0]
                     for row in rows)
    tally = ", ".join(f"{count} {status}" for status, count in counts.items()) or "none"
    held_out = "training CSV" if comp5329 else "training data"
    f1_name = ", the competition's \"mean F1\"" if comp5329 else ""
    budget = "the seed's" if comp5329 else "the"
    return (
        f"All scores are on the validation split held out from the {held_out}. "
        f"F1 samples is scikit-learn's f1_score(average='samples'){f1_name}; F1 micro, F1 macro "
        "and mAP (mean average precision over classes) are "
        "given beside it. Each run's decision threshold is tuned on the validation split "
        "(results.csv also holds F1 samples at 0.5). Train time is the wall-clock time of the "
        "whole training run; prediction time is the end-to-end time to predict the validation "
        "split (images decoded, full model). Sizes are in MB = 2**20 bytes: size is the "
        "parameters in fp32, file is the saved model file, which is checked against "
        f"{budget} {BUDGET_MB:g} MB budget. Weights \"{RANDOM_WEIGHTS}\" marks randomly "
        "initialised encoders, which are not pretrained results. "
        f"Runs: {len(rows)} ({tally})."
    )


def best_note(best: dict | None, comp5329: bool = True) -> str:
    """The best run's scores, times and size; on COMP5329, against the seed's published F1."""
    if best is None:
        seed = (f"; the seed's published best validation F1 is {SEED_BEST_F1:.4f}" if comp5329
                else "")
        return f"No run finished, so there is no best model yet{seed}."
    f1 = f1_of(best)
    gap = f1 - SEED_BEST_F1
    relation = "above" if gap > 0 else "below" if gap < 0 else "equal to"
    seed = (f" That is {abs(gap):.4f} {relation} the seed's published best validation F1 of "
            f"{SEED_BEST_F1:.4f}." if comp5329 else "")
    budget = {"yes": "within", "no": "over"}.get(yes_no(best.get("within_budget")))
    budget_text = f", {budget} the {BUDGET_MB:g} MB budget" if budget else ""
    random_text = " (randomly initialised encoders)" if text(best.get("weights")) == "none" else ""
    return (
        f"Best model: run \"{text(best.get('run'))}\", {model_label(best)} "
        f"({text(best.get('mode'))}, weights {weights_text(best.get('weights'))}){random_text}: "
        f"F1 samples {f1:.4f} (F1 micro {f1_text(best.get('f1_micro'))}, "
        f"F1 macro {f1_text(best.get('f1_macro'))}, mAP {f1_text(best.get('map'))}) at threshold "
        f"{general(best.get('threshold'))}; train time {one_decimal(best.get('train_seconds'))} s, "
        f"prediction time {one_decimal(best.get('predict_seconds'))} s, size "
        f"{one_decimal(best.get('size_mb'))} MB (file {one_decimal(best.get('model_file_mb'))} MB)"
        f"{budget_text}.{seed}"
    )


def labels_note(labels: LabelMap) -> str:
    """The labels the runs learned (data other than COMP5329)."""
    count = len(labels)
    if count > MAX_NAMED_LABELS:
        return (f"The runs learned {count} labels (labels.json in each run folder); the best "
                "model's per-class table lists every one.")
    return f"The runs learned {count} labels: {', '.join(labels.names)}."


def group_plots(group: str, rows: list[dict], plots: Plots) -> list[tuple]:
    """The group's comparison plots: F1 against size and per-class F1 (compare), sweeps."""
    done = sort_rows(finished(rows))
    blocks = []
    if group == "compare":
        points = [(text(row.get("run")), size_of(row), f1_of(row))
                  for row in done if size_of(row) is not None]
        if points:
            blocks.append(image(plots, f"{group}-f1-vs-size", scatter, points,
                                "Validation F1 samples against size (compare)"))
        series = per_class_series(done[:MAX_COMPARE_CLASSES_MODELS], plots.out_dir)
        if series:
            blocks.append(per_class_image(plots, f"{group}-per-class", series,
                                          f"Per-class F1 of the top {len(series)} compared models"))
    if is_search(group):
        series = sweep_series(rows)
        if series:
            blocks.append(image(plots, f"{group}-options", draw.sweep_plot, series,
                                f"F1 samples against each swept option ({group})"))
    return [block for block in blocks if block]


def image(plots: Plots, stem: str, function, data, caption: str) -> tuple | None:
    path = plots.draw(stem, function, data, caption)
    return ("img", path, caption) if path else None


def curves_blocks(rows: list[dict], plots: Plots) -> list[tuple]:
    blocks = []
    for row in sort_rows(finished(rows)):
        path = plots.run_curves(row)
        if path:
            caption = f"Loss and validation F1 per epoch: {text(row.get('run'))}"
            blocks.append(("img", path, caption))
    return [("h3", "Training curves")] + blocks if blocks else []


def group_section(group: str, rows: list[dict], plots: Plots) -> list[tuple]:
    return ([("h2", group_title(group)), table_block(rows, columns_for(group))]
            + group_plots(group, rows, plots) + curves_blocks(rows, plots))


def best_section(best: dict | None, plots: Plots) -> list[tuple]:
    if best is None:
        return []
    classes = read_per_class(find_run_dir(best, plots.out_dir))
    if not classes:
        return []
    name = text(best.get("run"))
    block = per_class_image(plots, f"best-per-class-{name}", {name: classes},
                            f"Per-class validation F1 of the best model ({name})")
    table = [per_class_table(classes)] if len(classes) > MAX_PLOT_CLASSES else []
    return [("h2", "Best model per class"), *([block] if block else []), *table]


PER_CLASS_COLUMNS = [column("label", "name", text), column("validation rows", "support", general),
                     *(column(header, key, f1_text) for header, key in
                       (("precision", "precision"), ("recall", "recall"), ("F1", "f1"), ("AP", "ap")))]


def per_class_table(classes: list[dict]) -> tuple:
    """Every label's validation scores, most validation rows first."""
    rows = by_support(classes)
    return ("table", [header for header, _ in PER_CLASS_COLUMNS],
            [[format_(row) for _, format_ in PER_CLASS_COLUMNS] for row in rows], [""] * len(rows))


def build_blocks(rows: list[dict], title: str, plots: Plots,
                 comp5329: bool | None = None) -> list[tuple]:
    best = best_row(rows)
    labels = study_labels(rows, plots.out_dir)
    comp5329 = is_comp5329(labels, comp5329)
    blocks = [("h1", title), ("p", measured_note(rows, comp5329))]
    if not comp5329 and labels is not None:
        blocks.append(("p", labels_note(labels)))
    blocks.append(("p", best_note(best, comp5329)))
    for group, members in grouped(rows):
        blocks += group_section(group, members, plots)
    return blocks + best_section(best, plots)


# ---- rendering ------------------------------------------------------------------------------

def markdown_cell(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|")


def markdown_table(headers: list[str], cells: list[list[str]]) -> str:
    rule = ["---:" if header in NUMERIC_HEADERS else "---" for header in headers]
    lines = [headers, rule] + cells
    return "\n".join("| " + " | ".join(markdown_cell(c) for c in line) + " |" for line in lines)


def to_markdown(blocks: list[tuple]) -> str:
    parts = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + rest[0])
        elif kind == "p":
            parts.append(rest[0])
        elif kind == "img":
            parts.append(f"![{rest[1]}]({rest[0]})")
        elif kind == "table":
            parts.append(markdown_table(rest[0], rest[1]))
    return "\n\n".join(parts) + "\n"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222;
       line-height: 1.45; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.55em; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.notok td { color: #777; font-style: italic; }
tr.random td.weights { color: #b00; font-weight: bold; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
"""


def html_table(headers: list[str], cells: list[list[str]], row_classes: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    kinds = ["num" if h in NUMERIC_HEADERS else "weights" if h == "weights" else ""
             for h in headers]
    body = []
    for line, row_class_ in zip(cells, row_classes):
        tds = "".join(f'<td class="{k}">{html.escape(c)}</td>' if k else f"<td>{html.escape(c)}</td>"
                      for k, c in zip(kinds, line))
        attribute = f' class="{row_class_}"' if row_class_ else ""
        body.append(f"<tr{attribute}>{tds}</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def to_html(blocks: list[tuple], title: str) -> str:
    parts = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            parts.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "img":
            path, caption = (html.escape(v, quote=True) for v in rest)
            parts.append(f'<figure><img src="{path}" alt="{caption}">'
                         f"<figcaption>{caption}</figcaption></figure>")
        elif kind == "table":
            parts.append(html_table(*rest))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(parts) + "\n</body>\n</html>\n")


# ---- entry points ---------------------------------------------------------------------------

def write_report(out_dir: Path, rows: list[dict], title: str,
                 comp5329: bool | None = None) -> None:
    """Write OUT/report.md, OUT/report.html and the PNGs under OUT/plots for these rows.
    Whether the data is COMP5329 comes from the runs' labels.json, else from `comp5329`."""
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    blocks = build_blocks([dict(row) for row in rows], title, Plots(out_dir), comp5329)
    (out_dir / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(to_html(blocks, title), encoding="utf-8")


def report_from_dir(out_dir: str | Path, title: str = "captag study report") -> None:
    """Read OUT/results.csv and write the report beside it."""
    out_dir = Path(out_dir)
    write_report(out_dir, read_results(out_dir / "results.csv"), title)
