"""`captag data`: read a dataset exactly as `train` would and report on it.

`inspect_data` reads the rows (`read_data`), builds the label map (`label_map`) and checks every
image (`screen_images`), so it stops with the same errors `train` would on a dataset that
`train` refuses. It then counts what a user wants to know before a long run: label counts,
labels per row, text lengths in tokens of the text encoder (and the rows `max_length` cuts),
image sizes (from the file headers, nothing decoded twice) and duplicate rows and images (by
file content). The result is a JSON-able dict; `report_lines` writes it for people and
`plot_label_counts` draws the label counts as a PNG bar chart.
"""

from __future__ import annotations

import functools
import hashlib
import statistics
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from captag.config import RunConfig
from captag.data import Data, DataOptions, LabelMap, Record, label_map, read_data, screen_images
from captag.data.sources import require_labelled
from captag.errors import WeightsNotFoundError

RARE = 5  # labels with fewer rows are listed (as `train` warns)
EXAMPLES = 50  # most bad images listed per kind
FEW = 5  # duplicate examples listed
PLOTTED = 50  # most labels drawn in the bar chart
TOKEN_BATCH = 1000
DEFAULT_TEXT_ENCODER: str = RunConfig.text_encoder  # the dataclass field's default


def inspect_data(path, options: DataOptions = DataOptions(),
                 text_encoder: str = DEFAULT_TEXT_ENCODER, max_length: int = 64,
                 plot: str | None = None, progress: bool = False) -> dict:
    """The report on the dataset at `path`, read with `options` (see the module docstring).

    Raises what `train` raises on a dataset it refuses: read_data's and label_map's errors,
    and BadImagesError for bad images unless `options.skip_bad` (then they are counted)."""
    started = time.perf_counter()
    data = read_data(path, options)
    labels = _label_map(data, options)
    records, images, hashes = _images(data, options, progress)
    result = {
        "path": str(data.path), "format": data.format, "chosen": data.chosen(),
        "columns": {"image": data.image_column, "text": data.text_column,
                    "labels": _label_columns(data)},
        "rows_read": len(data.records), "rows_used": len(records),
        "rows_skipped": data.skipped,
        "labels": label_section(records, labels),
        "text": text_section(records, data, text_encoder, max_length),
        "images": images,
        "duplicates": duplicate_section(records, hashes),
    }
    if plot:
        chart = plot_label_counts(result["labels"]["counts"], Path(plot), data.path.name)
        result["plot"] = str(chart)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


# --- reading ----------------------------------------------------------------------------

def _label_map(data: Data, options: DataOptions) -> LabelMap:
    """The label map `train` would build; a dataset without labels is refused as train does."""
    require_labelled(data, "training")
    return label_map(data, options.labels)


def _label_columns(data: Data) -> str | list[str] | None:
    form = data.labels
    if form is None:
        return None
    return list(form.columns) if form.kind == "columns" else form.column


# --- labels -----------------------------------------------------------------------------

def label_section(records: Sequence[Record], labels: LabelMap) -> dict:
    """Every label of the map with its count of rows (most frequent first), labels per row,
    and the labels with fewer than RARE rows."""
    counts = Counter(label for r in records for label in r.labels)
    rows = max(len(records), 1)
    listed = [{"label": str(i), "name": name, "rows": counts.get(i, 0),
               "share": round(counts.get(i, 0) / rows, 4)}
              for i, name in zip(labels.ids, labels.names)]
    listed.sort(key=lambda c: -c["rows"])  # stable: label-map order among equal counts
    per_row = [len(r.labels) for r in records]
    histogram = Counter(per_row)
    return {
        "distinct": len(labels), "counts": listed,
        "per_row": {"min": min(per_row, default=0), "max": max(per_row, default=0),
                    "mean": round(statistics.fmean(per_row), 3) if per_row else 0.0,
                    "histogram": {str(k): histogram[k] for k in sorted(histogram)}},
        "rare": [c["label"] for c in listed if c["rows"] < RARE],
    }


# --- text -------------------------------------------------------------------------------

def text_section(records: Sequence[Record], data: Data, text_encoder: str,
                 max_length: int) -> dict | None:
    """Text lengths in tokens (special tokens included, as the encoder sees them) and the rows
    longer than `max_length`; None without a text column; {"error": ...} without a tokenizer."""
    if data.text_column is None:
        return None
    try:
        tokenizer = load_tokenizer(text_encoder)
    except (OSError, ValueError, WeightsNotFoundError) as error:
        return {"encoder": text_encoder, "error": f"no tokenizer for {text_encoder!r}: {error}"}
    lengths = token_lengths(tokenizer, [r.caption for r in records])
    if not lengths:
        return {"encoder": text_encoder, "max_length": max_length, "rows_cut": 0}
    ordered = sorted(lengths)
    cut = [r.line for r, n in zip(records, lengths) if n > max_length]
    return {"encoder": text_encoder, "max_length": max_length,
            "tokens": {"min": ordered[0], "median": statistics.median(ordered),
                       "p95": _percentile(ordered, 95), "max": ordered[-1]},
            "rows_cut": len(cut), "cut_lines": cut[:FEW]}


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str):
    """The fast tokenizer of text encoder `name`, from its installed package's folder (no
    weights loaded), else from the hub or its local cache."""
    from transformers import AutoTokenizer

    from captag.models import weights as weights_lib
    plan = weights_lib.plan_weights(name)
    if plan.offline:
        return AutoTokenizer.from_pretrained(str(weights_lib.fetch(plan)), use_fast=True)
    return AutoTokenizer.from_pretrained(plan.location, use_fast=True,
                                         local_files_only=weights_lib.hub_offline())


def token_lengths(tokenizer, texts: list[str], batch: int = TOKEN_BATCH) -> list[int]:
    lengths = []
    for start in range(0, len(texts), batch):
        ids = tokenizer(texts[start:start + batch], truncation=False, padding=False,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        lengths.extend(len(i) for i in ids)
    return lengths


def _percentile(ordered: list, q: float):
    """The nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# --- images -----------------------------------------------------------------------------

def _images(data: Data, options: DataOptions,
            progress: bool) -> tuple[list[Record], dict, dict[str, str]]:
    """The records `train` keeps, the images section, and each kept image's content hash."""
    if data.image_column is None:
        note = "no image column (a text-only dataset)"
        return list(data.records), {"checked": 0, "note": note}, {}
    folder = data.image_dir()
    kept, bad = screen_images(data.records, folder, skip_bad=options.skip_bad, progress=progress)
    missing = [b for b in bad if b.reason == "missing"]
    broken = [b for b in bad if b.reason != "missing"]
    files = list(dict.fromkeys(r.image_id for r in kept))
    headers = read_headers(folder, files, progress)
    checked = len({r.image_id for r in data.records})
    return kept, {
        "folder": str(folder.resolve()), "checked": checked, "found": checked - len(missing),
        "missing": len(missing), "undecodable": len(broken),
        "missing_examples": [b.image_id for b in missing[:EXAMPLES]],
        "undecodable_examples": [{"image": b.image_id, "reason": b.reason}
                                 for b in broken[:EXAMPLES]],
        "sizes": size_section([h[1] for h in headers.values()]),
    }, {image: h[0] for image, h in headers.items()}


def read_headers(folder: Path, files: list[str], progress: bool = False,
                 workers: int = 4) -> dict[str, tuple[str, tuple[int, int]]]:
    """(content hash, (width, height)) of each image file, the size from its header only."""
    def one(name: str):
        raw = (folder / name).read_bytes()
        return hashlib.blake2b(raw, digest_size=16).hexdigest(), _header_size(raw)

    with ThreadPoolExecutor(workers) as pool:  # hashlib releases the GIL on large buffers
        results = pool.map(one, files, chunksize=64)
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(files), desc="hashing images", unit="img")
        return dict(zip(files, results))


def _header_size(raw: bytes) -> tuple[int, int]:
    import io

    from PIL import Image
    with Image.open(io.BytesIO(raw)) as image:
        return image.size


def size_section(sizes: list[tuple[int, int]]) -> dict:
    if not sizes:
        return {}
    sides = {"width": [s[0] for s in sizes], "height": [s[1] for s in sizes]}
    return {side: {"min": min(values), "median": statistics.median(values), "max": max(values)}
            for side, values in sides.items()}


# --- duplicates -------------------------------------------------------------------------

def duplicate_section(records: Sequence[Record], hashes: dict[str, str]) -> dict:
    """Rows with the same image, text and labels; image files with the same content; image
    paths that several rows use."""
    rows = _groups(records, lambda r: (r.image_id, r.caption, tuple(sorted(map(str, r.labels)))))
    paths = _groups([r for r in records if r.image_id], lambda r: r.image_id)
    by_hash = defaultdict(list)
    for image, digest in hashes.items():
        by_hash[digest].append(image)
    same = [group for group in by_hash.values() if len(group) > 1]
    return {
        "rows": {"count": sum(len(g) - 1 for g in rows),
                 "examples": [[g[0].line, r.line] for g in rows for r in g[1:]][:FEW]},
        "images": {"count": sum(len(g) - 1 for g in same), "groups": len(same),
                   "examples": [group[:FEW] for group in same[:FEW]]},
        "paths": {"count": len(paths),
                  "examples": [{"image": g[0].image_id, "lines": [r.line for r in g][:FEW]}
                               for g in paths[:FEW]]},
    }


def _groups(records: Sequence[Record], key) -> list[list[Record]]:
    """The groups of more than one record with the same key, in file order."""
    groups = defaultdict(list)
    for record in records:
        groups[key(record)].append(record)
    return [group for group in groups.values() if len(group) > 1]


# --- plot -------------------------------------------------------------------------------

def plot_label_counts(counts: list[dict], path: Path, title: str = "", most: int = PLOTTED) -> Path:
    """A horizontal bar chart of the `most` most frequent labels (of `counts`, sorted), as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = counts[:most]
    figure = Figure(figsize=(8, 1.2 + 0.24 * max(len(shown), 2)), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    names = [_short(c["name"] if c["name"] == c["label"] else f"{c['label']} {c['name']}")
             for c in shown]
    bars = ax.barh(range(len(shown)), [c["rows"] for c in shown], color="#4C72B0")
    ax.bar_label(bars, padding=2, fontsize=7)
    ax.set_yticks(range(len(shown)), names, fontsize=8)
    ax.invert_yaxis()
    ax.margins(y=0.01)
    ax.set_xlabel("rows")
    ax.grid(axis="x", alpha=0.3)
    top = f"the {len(shown)} most frequent of {len(counts)} labels" if len(counts) > len(shown) \
        else f"{len(counts)} labels"
    ax.set_title(f"Label counts{f' in {title}' if title else ''}: {top}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def _short(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- report -----------------------------------------------------------------------------

def report_lines(result: dict) -> list[str]:
    """The report for people: one short section per topic."""
    return [result["chosen"], *_skipped_lines(result), "", *_label_lines(result["labels"]),
            "", *_text_lines(result["text"]), "", *_image_lines(result["images"]),
            "", *_duplicate_lines(result["duplicates"]),
            *([f"Label chart: {result['plot']}"] if result.get("plot") else []),
            f"({result['seconds']} s)"]


def _skipped_lines(result: dict) -> list[str]:
    skipped = result["rows_skipped"]
    lines = [f"  line {s['line']}: column {s['column']!r}: {s['problem']}" for s in skipped[:10]]
    more = [f"  ... and {len(skipped) - 10} more"] if len(skipped) > 10 else []
    used = result["rows_used"]
    return ([f"Left out {len(skipped)} bad rows:"] + lines + more if skipped else []) + \
        ([f"{used} rows kept after the image check"] if used != result["rows_read"] else [])


def _label_lines(labels: dict) -> list[str]:
    counts = labels["counts"]
    width = max([len(_name(c)) for c in counts] + [5])
    lines = [f"Labels: {labels['distinct']}", f"  {'label':<{width}}  {'rows':>7}  share"]
    lines += [f"  {_name(c):<{width}}  {c['rows']:>7}  {c['share']:6.1%}" for c in counts]
    per_row = labels["per_row"]
    histogram = ", ".join(f"{k}: {v}" for k, v in per_row["histogram"].items())
    lines.append(f"Labels per row: min {per_row['min']}, mean {per_row['mean']}, max "
                 f"{per_row['max']} (rows by count: {histogram})")
    if labels["rare"]:
        lines.append(f"Labels with fewer than {RARE} rows: {', '.join(labels['rare'])}")
    return lines


def _name(count: dict) -> str:
    label, name = count["label"], count["name"]
    return label if name == label else f"{label} {name}"


def _text_lines(text: dict | None) -> list[str]:
    if text is None:
        return ["Text: no text column"]
    if "error" in text:
        return [f"Text lengths: unknown ({text['error']})"]
    if "tokens" not in text:
        return ["Text lengths: no rows"]
    tokens, cut = text["tokens"], text["rows_cut"]
    shown = text["cut_lines"]
    lines = ", ".join(map(str, shown)) + (", ..." if cut > len(shown) else "")
    return [f"Text lengths in {text['encoder']} tokens: min {tokens['min']}, median "
            f"{tokens['median']}, p95 {tokens['p95']}, max {tokens['max']}",
            f"  {cut} rows longer than max_length {text['max_length']} would be cut"
            + (f" (lines {lines})" if cut else "")]


def _image_lines(images: dict) -> list[str]:
    if not images.get("checked"):
        return [f"Images: none ({images.get('note', 'no image column')})"]
    lines = [f"Images in {images['folder']}: {images['found']} of {images['checked']} found, "
             f"{images['missing']} missing, {images['undecodable']} undecodable"]
    lines += [f"  missing: {i}" for i in images["missing_examples"][:10]]
    lines += [f"  {b['image']}: {b['reason']}" for b in images["undecodable_examples"][:10]]
    sizes = images["sizes"]
    if sizes:
        lines.append("Image sizes: " + "; ".join(
            f"{side} min {s['min']}, median {s['median']}, max {s['max']}"
            for side, s in sizes.items()))
    return lines


def _duplicate_lines(duplicates: dict) -> list[str]:
    rows, images, paths = duplicates["rows"], duplicates["images"], duplicates["paths"]
    lines = [f"Duplicate rows (same image, text and labels): {rows['count']}"
             + (f", e.g. lines {'; '.join(f'{a} and {b}' for a, b in rows['examples'])}"
                if rows["examples"] else "")]
    lines.append(f"Duplicate images (same file content): {images['count']} files in "
                 f"{images['groups']} groups" + (", e.g. " + "; ".join(
                     " = ".join(g) for g in images["examples"]) if images["examples"] else ""))
    lines.append(f"Image paths used by several rows: {paths['count']}" + (", e.g. " + "; ".join(
        f"{p['image']} (lines {', '.join(map(str, p['lines']))})" for p in paths["examples"])
        if paths["examples"] else ""))
    return lines
