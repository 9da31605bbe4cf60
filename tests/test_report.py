"""Tests of the study report (report.md, report.html, plots) on made-up run folders."""

import csv
import json
import re
from pathlib import Path

from captag.experiments.report import (read_results, report_from_dir, sweep_series,
                                       write_report)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
         "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
         "dog", "horse"]
LABELS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19]
COLUMNS = [
    "run", "group", "model", "mode", "image_encoder", "text_encoder", "batch_size", "lr",
    "head_lr", "epochs", "f1_samples", "f1_micro", "f1_macro", "map", "f1_samples_at_0.5",
    "threshold", "train_seconds", "predict_seconds", "predict_samples_per_second", "size_mb",
    "model_file_mb", "within_budget", "parameters", "weights", "status", "run_dir"]
SKIPPED = "skipped: no pretrained weights offline"


def fake_run(folder: Path, final_f1: float, epochs: int = 3, labels=LABELS, names=NAMES) -> Path:
    """A run folder with a plausible metrics.csv, summary.json and labels.json (COMP5329's
    labels unless others are given)."""
    folder.mkdir(parents=True)
    (folder / "labels.json").write_text(json.dumps({"ids": list(labels), "names": list(names)}))
    lines = ["epoch,train_loss,val_loss,val_f1_samples,val_f1_micro,val_f1_macro,val_map,seconds"]
    for epoch in range(1, epochs + 1):
        f1 = final_f1 - 0.05 * (epochs - epoch)
        lines.append(f"{epoch},{0.30 / epoch:.6f},{0.25 / epoch + 0.05:.6f},{f1:.6f},"
                     f"{f1 - 0.01:.6f},{f1 - 0.2:.6f},{f1 - 0.1:.6f},{12.5 * epoch:.2f}")
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    per_class = [{"label": label, "name": name, "support": 500 - 20 * i,
                  "precision": 0.9 - 0.02 * i, "recall": 0.85 - 0.02 * i,
                  "f1": max(0.0, final_f1 - 0.03 * i), "ap": 0.9 - 0.02 * i}
                 for i, (label, name) in enumerate(zip(labels, names))]
    (folder / "summary.json").write_text(json.dumps({"val_per_class": per_class}))
    return folder


def row(run, group, model="fusion", f1="", status="ok", run_dir="", **extra) -> dict:
    values = {column: "" for column in COLUMNS}
    values.update(run=run, group=group, model=model, mode="frozen",
                  image_encoder="tf_efficientnet_lite0" if model != "text-only" else "",
                  text_encoder="all-MiniLM-L6-v2" if model != "image-only" else "",
                  batch_size=32, lr=1e-4, head_lr=3e-3, epochs=3, status=status,
                  run_dir=str(run_dir), weights="image:package text:package")
    if f1 != "":
        values.update(f1_samples=f1, f1_micro=f1 - 0.01, f1_macro=f1 - 0.2, map=f1 - 0.1,
                      threshold=0.35, train_seconds=123.456, predict_seconds=4.321,
                      size_mb=37.25, model_file_mb=37.4, within_budget=True, parameters=9765432)
    values.update(extra)
    return values


def study_rows(tmp_path: Path) -> list[dict]:
    """compare (2 ok + 1 skipped random-init), sweep (base + lr + batch size), ablation."""
    fused = fake_run(tmp_path / "runs" / "fusion", 0.87123)
    image = fake_run(tmp_path / "runs" / "image-only", 0.75234)
    high_lr = fake_run(tmp_path / "runs" / "sweep-lr", 0.86011)
    return [
        row("image-only", "compare", "image-only", 0.75234, run_dir=image, size_mb=13.1,
            model_file_mb=13.2),
        row("fusion", "compare", "fusion", 0.87123, run_dir=fused),
        row("vit_small", "compare", "vit_small_patch16_224", status=SKIPPED, weights="none",
            image_encoder="vit_small_patch16_224", text_encoder=""),
        row("sweep-base", "sweep", "fusion", 0.87123, run_dir=fused),
        row("sweep-lr", "sweep", "fusion", 0.86011, run_dir=high_lr, lr=1e-3),
        row("sweep-bs", "sweep", "fusion", 0.85555, run_dir=tmp_path / "runs" / "missing",
            batch_size=64),
        row("ablation-image", "ablation", "image-only", 0.75234, run_dir=image),
        row("ablation-text", "ablation", "text-only", 0.70001),
        row("ablation-fused", "ablation", "fusion", 0.87123, run_dir=fused),
    ]


def as_strings(rows: list[dict]) -> list[dict]:
    return [{key: str(value) for key, value in r.items()} for r in rows]


def image_paths(out_dir: Path) -> list[Path]:
    page = (out_dir / "report.html").read_text()
    return [out_dir / src for src in re.findall(r'<img src="([^"]+)"', page)]


def check_report(out_dir: Path) -> str:
    report = (out_dir / "report.md").read_text()
    assert report.startswith("# Study\n")
    for header in ("| run | model | mode |", "F1 samples", "F1 micro", "F1 macro", "mAP",
                   "train time (s)", "prediction time (s)", "size (MB)", "within budget",
                   "weights", "status"):
        assert header in report
    assert "| batch size | lr | head lr | epochs |" in report  # sweep table only
    assert report.count("| batch size |") == 1
    assert 'Best model: run "fusion", fusion: tf_efficientnet_lite0 + all-MiniLM-L6-v2' in report
    assert "F1 samples 0.8712" in report and "0.8966" in report
    assert "0.0254 below" in report
    assert "| 0.8712 |" in report and "| 123.5 |" in report and "| 37.2 |" in report
    skipped = next(line for line in report.splitlines() if line.startswith("| vit_small |"))
    assert "none (random init)" in skipped and SKIPPED in skipped
    compare = report.split("## Model comparison")[1].split("\n## ")[0]
    order = [compare.index(f"| {name} |") for name in ("fusion", "image-only", "vit_small")]
    assert order == sorted(order)
    return report


def check_pngs(out_dir: Path) -> list[Path]:
    paths = image_paths(out_dir)
    assert paths
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0, path
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    names = {path.name for path in paths}
    for name in ("curves-fusion.png", "curves-image-only.png", "curves-sweep-lr.png",
                 "compare-f1-vs-size.png", "compare-per-class.png", "sweep-options.png",
                 "best-per-class-fusion.png"):
        assert name in names
    return paths


def test_report_tables_best_model_and_skipped_row(tmp_path):
    write_report(tmp_path, study_rows(tmp_path), "Study")
    check_report(tmp_path)
    check_pngs(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "<style>" in page and "<table>" in page and "none (random init)" in page


def test_report_from_csv_strings(tmp_path):
    rows = as_strings(study_rows(tmp_path))
    with open(tmp_path / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    assert read_results(tmp_path / "results.csv") == rows
    report_from_dir(tmp_path, title="Study")
    check_report(tmp_path)
    check_pngs(tmp_path)


def test_single_skipped_row_and_no_groups(tmp_path):
    rows = [{"run": "vit", "model": "vit_small", "weights": "none", "status": SKIPPED}]
    write_report(tmp_path / "out", rows, "Only skipped")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "No run finished" in report and "none (random init)" in report and SKIPPED in report
    assert image_paths(tmp_path / "out") == []


def test_single_ok_row_without_run_folder(tmp_path):
    rows = as_strings([row("alone", "compare", "fusion", 0.8, run_dir=tmp_path / "gone")])
    write_report(tmp_path, rows, "One run")
    report = (tmp_path / "report.md").read_text()
    assert 'Best model: run "alone"' in report and "F1 samples 0.8000" in report
    assert [p.name for p in image_paths(tmp_path)] == ["compare-f1-vs-size.png"]


def test_sweep_series_groups_rows_by_the_option_that_differs():
    rows = as_strings([row("base", "sweep", f1=0.8), row("lr", "sweep", f1=0.7, lr="0.001"),
                       row("bs", "sweep", f1=0.75, batch_size=64),
                       row("both", "sweep", f1=0.6, lr=1e-2, batch_size=16),
                       row("skip", "sweep", status=SKIPPED, lr=1e-5)])
    series = sweep_series(rows)
    assert sorted(series) == ["batch_size", "lr"]
    assert sorted(series["lr"]) == [(1e-4, 0.8), (1e-3, 0.7)]
    assert sorted(series["batch_size"]) == [(32.0, 0.8), (64.0, 0.75)]


def test_a_plot_widens_until_its_longest_name_fits(tmp_path):
    from matplotlib.text import Text

    from captag.experiments.plots import new_figure, save
    figure, (ax,) = new_figure(4, 3)
    ax.text(0.5, 0.5, "a model name that is far too long for a four-inch figure " * 3)
    save(figure, tmp_path / "long.png")
    renderer = figure.canvas.get_renderer()
    ends = [t.get_window_extent(renderer).x1 for t in figure.findobj(Text) if t.get_text()]
    assert figure.get_size_inches()[0] > 4 and max(ends) <= figure.bbox.x1


COMP5329_WORDS = ("COCO", "18 labels", "competition", "0.8966", "seed's published")


def word_run(folder: Path, final_f1: float, words: list[str]) -> Path:
    """A run on data with word labels: its labels.json ids are the words; support falls with
    the word's place, except that the last word is the most frequent."""
    fake_run(folder, final_f1, labels=words, names=words)
    summary = json.loads((folder / "summary.json").read_text())
    for number, row in enumerate(summary["val_per_class"]):
        row["support"] = 900 if number == len(words) - 1 else 500 - 5 * number
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_a_report_on_word_labels_names_them_and_nothing_of_comp5329(tmp_path):
    words = ["animal", "outdoor", "person", "vehicle"]
    fused = word_run(tmp_path / "runs" / "fusion", 0.9, words)
    image = word_run(tmp_path / "runs" / "image-only", 0.8, words)
    write_report(tmp_path, [row("fusion", "compare", "fusion", 0.9, run_dir=fused),
                            row("image-only", "compare", "image-only", 0.8, run_dir=image)], "Study")
    report = (tmp_path / "report.md").read_text()
    for page in (report, (tmp_path / "report.html").read_text()):
        assert not [word for word in COMP5329_WORDS if word in page]
    assert "The runs learned 4 labels: animal, outdoor, person, vehicle." in report
    assert "F1 samples 0.9000" in report and "within the 100 MB budget." in report
    assert "most frequent" not in report and "| validation rows |" not in report  # all 4 plotted


def test_comp5329_runs_keep_the_seed_comparison(tmp_path):
    fused = fake_run(tmp_path / "runs" / "fusion", 0.9)
    write_report(tmp_path, [row("fusion", "compare", "fusion", 0.9, run_dir=fused)], "Study")
    report = (tmp_path / "report.md").read_text()
    assert "the competition's" in report and "0.0034 above the seed's published" in report
    assert "The runs learned" not in report and "most frequent" not in report
    # without any labels.json, the caller tells; it defaults to COMP5329
    write_report(tmp_path / "other", [row("gone", "compare", f1=0.5)], "Study", comp5329=False)
    assert "0.8966" not in (tmp_path / "other" / "report.md").read_text()


def test_eighty_labels_plot_the_30_most_frequent_and_the_table_lists_all(tmp_path):
    from PIL import Image
    words = [f"genre {number:02d}" for number in range(80)]
    fused = word_run(tmp_path / "runs" / "fusion", 0.9, words)
    image = word_run(tmp_path / "runs" / "image-only", 0.8, words)
    write_report(tmp_path, [row("fusion", "compare", "fusion", 0.9, run_dir=fused),
                            row("image-only", "compare", "image-only", 0.8, run_dir=image)], "Study")
    report = (tmp_path / "report.md").read_text()
    note = ": the 30 most frequent of 80 labels (by validation rows)"
    assert f"![Per-class F1 of the top 2 compared models{note}]" in report
    assert f"![Per-class validation F1 of the best model (fusion){note}]" in report
    assert "The runs learned 80 labels" in report and "genre 00," not in report
    table = [line for line in report.split("## Best model per class")[1].splitlines()
             if line.startswith("| ") and not line.startswith("| ---")]
    assert table[0] == "| label | validation rows | precision | recall | F1 | AP |"
    assert len(table) == 81 and table[1].startswith("| genre 79 | 900 |")  # most rows first
    for name in ("compare-per-class.png", "best-per-class-fusion.png"):
        width, height = Image.open(tmp_path / "plots" / name).size
        assert height < 2000, (name, height)


def test_most_frequent_keeps_the_series_when_every_label_fits():
    from captag.experiments.report import most_frequent
    rows = [{"label": word, "name": word, "support": n, "f1": 0.5}
            for n, word in enumerate(["a", "b", "c"])]
    assert most_frequent({"m": rows}) == ({"m": rows}, "")
    cut, note = most_frequent({"m": rows, "n": rows[::-1]}, limit=2)
    assert [r["label"] for r in cut["m"]] == ["c", "b"] == [r["label"] for r in cut["n"]]
    assert note == ": the 2 most frequent of 3 labels (by validation rows)"
