"""Ablation of issue 8's quality levers on the whole train.csv, one `captag train` per row.

    python benchmarks/bench_quality.py [--rows default,asl,...] [--work DIR]
                                       [--data ../shared/datasets/comp5329]

Every row trains on the same seeded 80/20 split and tunes its threshold on its own validation
rows, as `captag train` always does; no row is tuned on rows it reports. Rows share one
feature cache under --work, so the first row at each image size pays for the cache
(features_seconds) and the later ones find it warm; fit_seconds is comparable between rows.
A finished row is not run again: delete its folder under --work to redo it.

`fixres-*` rows train nothing: they score an earlier row's model at a larger image size
(FixRes: train low, test high), with the threshold tuned on the same validation rows.
`recall-at-*` rows compare two rows' models on the small-object classes at equal precision.
`mean:*` rows average the probabilities of trained rows' models (all on the same split).

Prints a table and writes benchmarks/results/quality.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "comp5329"
SMALL_OBJECTS = ["car", "bench", "truck", "traffic light", "bicycle"]

# the recipe before issue 8 (the defaults until then), which every row adds its levers to;
# gamma_neg 4 was ASL's default when the ASL rows ran, lr 2e-4 the default until issue 23
BEFORE = ["--image-encoder", "tf_efficientnet_lite0", "--image-size", "224", "--loss", "bce",
          "--csra", "0", "--asl-gamma-neg", "4", "--lr", "2e-4"]
LITE2_320 = ["--image-encoder", "tf_efficientnet_lite2", "--image-size", "320"]
# issue 8's default, on which the rows after it add their levers
ISSUE8 = [*BEFORE, *LITE2_320, "--loss", "asl", "--csra", "0.1", "--asl-gamma-neg", "2"]
ROWS: dict[str, list[str]] = {
    "before": BEFORE,
    "asl": [*BEFORE, "--loss", "asl"],
    "csra": [*BEFORE, "--csra", "0.1"],
    "ema": [*BEFORE, "--ema", "0.999"],
    "asl+csra+ema": [*BEFORE, "--loss", "asl", "--csra", "0.1", "--ema", "0.999"],
    "288px+asl+csra": [*BEFORE, "--image-size", "288", "--loss", "asl", "--csra", "0.1"],
    "320px+asl+csra": [*BEFORE, "--image-size", "320", "--loss", "asl", "--csra", "0.1"],
    "lite2+320px+asl+csra": [*BEFORE, *LITE2_320, "--loss", "asl", "--csra", "0.1"],
    "lite2+320px+asl+csra+60m": [*BEFORE, *LITE2_320, "--loss", "asl", "--csra", "0.1",
                                 "--time-limit", "60m", "--patience", "2"],
    "lite2+320px+asl+csra0.3": [*BEFORE, *LITE2_320, "--loss", "asl", "--csra", "0.3"],
    "lite2+320px+asl+csra+image4": [*BEFORE, *LITE2_320, "--loss", "asl", "--csra", "0.1",
                                    "--image-trainable", "4"],
    "lite2+320px+asl(gamma_neg2)+csra": ISSUE8,
    "lite2+320px+asl(gamma_neg2)+csra+lr4e-4": [*ISSUE8, "--lr", "4e-4"],  # the default now
    "default+flip+6ep": [*ISSUE8, "--feature-flip", "0.5", "--epochs", "6"],
}
FIXRES: dict[str, tuple[str, int]] = {
    "fixres-288(asl+csra+ema)": ("asl+csra+ema", 288),
    "fixres-320(asl+csra+ema)": ("asl+csra+ema", 320),
}
ENSEMBLES: dict[str, tuple[str, ...]] = {
    "mean:lite2+320px+asl+csra&image4": ("lite2+320px+asl+csra", "lite2+320px+asl+csra+image4"),
}
MATCHED: dict[str, tuple[str, str]] = {
    "recall-at-before's-precision(lite2+320px+asl+csra)": ("before", "lite2+320px+asl+csra"),
}

CHOICES = [*ROWS, *FIXRES, *ENSEMBLES, *MATCHED]


def captag(*args: str, env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "captag.cli", "-q", *args], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"captag {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def scores(val: dict, per_class: list[dict]) -> dict:
    recall = {c["name"]: round(c["recall"], 3) for c in per_class if c["name"] in SMALL_OBJECTS}
    return {"f1_samples": round(val["f1_samples"], 4), "f1_micro": round(val["f1_micro"], 4),
            "f1_macro": round(val["f1_macro"], 4), "map": round(val["map"], 4),
            "recall": {name: recall[name] for name in SMALL_OBJECTS}}


def train_row(name: str, args: list[str], data: Path, work: Path, env: dict) -> dict:
    run = work / name
    if not (run / "summary.json").exists():
        captag("train", "--csv", str(data / "train.csv"), "--out", str(run), *args, env=env)
    summary = json.loads((run / "summary.json").read_text())
    return {"row": name, "args": " ".join(args), **scores(summary["val"], summary["val_per_class"]),
            "threshold": summary["threshold"], "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"], "features_seconds": summary["features_seconds"],
            "fit_seconds": summary["fit_seconds"], "train_seconds": summary["train_seconds"]}


def val_probs(run: Path, data: Path, saved: Path, size: int | None = None):
    """(targets, probabilities, predict seconds, predictor) of a run's model on its validation
    rows, at `size` px (None: the run's own); the probabilities and seconds are kept in `saved`."""
    from captag.data import read_records
    from captag.inference.predictor import Predictor
    predictor = Predictor(run, image_size=size)  # at another size than the run's: on torch
    val_ids = set(predictor.load_split()[1])
    records = [r for r in read_records(data / "train.csv") if r.image_id in val_ids]
    if not saved.exists():
        started = time.perf_counter()
        probs = predictor.predict_probs(records, data / "data", progress=False)
        np.savez(saved, probs=probs, seconds=time.perf_counter() - started)
    with np.load(saved) as stored:
        probs, seconds = stored["probs"], float(stored["seconds"])
    return predictor.labels.encode_many([r.labels for r in records]), probs, seconds, predictor


def tuned_scores(targets, probs, labels) -> dict:
    """The scores and the threshold of `probs`, that threshold tuned on these rows as
    `captag train` tunes every run's."""
    from captag.evaluation.metrics import compute_metrics, per_class_report, tune_threshold
    threshold, _ = tune_threshold(targets, probs)
    return {**scores(compute_metrics(targets, probs, threshold),
                     per_class_report(targets, probs, threshold, labels.ids, labels.names)),
            "threshold": threshold}


def fixres_row(name: str, source: str, size: int, data: Path, work: Path) -> dict:
    """The `source` row's model scored on its validation rows at `size` px, its threshold tuned
    there as `captag train` tunes every row's (the trained one is kept beside it)."""
    from captag.evaluation.metrics import compute_metrics
    targets, probs, seconds, predictor = val_probs(work / source, data, work / f"{name}.npz", size)
    trained = compute_metrics(targets, probs, predictor.threshold)
    return {"row": name, "args": f"{source}'s model at --image-size {size}",
            **tuned_scores(targets, probs, predictor.labels),
            "f1_samples_at_trained_threshold": round(trained["f1_samples"], 4),
            "predict_seconds": round(seconds, 1)}


def ensemble_row(name: str, members: tuple[str, ...], data: Path, work: Path) -> dict:
    """The mean of the members' probabilities on their (shared) validation rows, the threshold
    tuned there: what averaging trained models would give, without training anything."""
    scored = [val_probs(work / m, data, work / f"{m}.npz") for m in members]
    targets, labels = scored[0][0], scored[0][3].labels
    probs = np.mean([p for _, p, _, _ in scored], axis=0)
    return {"row": name, "args": "mean probability of " + ", ".join(members),
            **tuned_scores(targets, probs, labels),
            "predict_seconds": round(sum(s for _, _, s, _ in scored), 1)}


def matched_row(name: str, base: str, new: str, data: Path, work: Path) -> dict:
    """The `new` row's recall of each small-object class at the precision that the `base` row
    has at its own tuned threshold: the most recall among the new model's thresholds whose
    precision is at least the base's. Both models are scored on the same validation rows."""
    from sklearn.metrics import precision_recall_curve

    from captag.evaluation.metrics import per_class_report
    targets, base_probs, _, base_model = val_probs(work / base, data, work / f"{base}.npz")
    _, new_probs, _, _ = val_probs(work / new, data, work / f"{new}.npz")
    names = base_model.labels.names
    report = per_class_report(targets, base_probs, base_model.threshold, base_model.labels.ids, names)
    matched, recall = {c["name"]: c["precision"] for c in report}, {}
    for name_ in SMALL_OBJECTS:
        c = names.index(name_)
        precision, recalls, _ = precision_recall_curve(targets[:, c], new_probs[:, c])
        recall[name_] = round(float(recalls[precision >= matched[name_]].max()), 3)
    return {"row": name, "args": f"{new}'s recall at {base}'s precision",
            "precision_matched": {n: round(matched[n], 3) for n in SMALL_OBJECTS},
            "recall": recall}


def print_table(rows: list[dict]) -> None:
    head = ["row", "f1_samples", "f1_micro", "f1_macro", "map", *SMALL_OBJECTS, "fit_s", "train_s"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [r["row"], *(r.get(k, "") for k in ("f1_samples", "f1_micro", "f1_macro", "map")),
                 *(r["recall"][c] for c in SMALL_OBJECTS), r.get("fit_seconds", ""),
                 r.get("train_seconds", "")]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated: "
                        + ", ".join(CHOICES))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("quality-runs"))
    args = parser.parse_args()
    names = args.rows.split(",")
    unknown = [n for n in names if n not in CHOICES]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {CHOICES}")
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CAPTAG_CACHE": str(args.work / "cache")}
    results_path = HERE / "results" / "quality.json"
    saved = json.loads(results_path.read_text()) if results_path.exists() else {"rows": {}}
    rows = []
    for name in names:
        if name in ROWS:
            row = train_row(name, ROWS[name], args.data, args.work, env)
        elif name in FIXRES:
            row = fixres_row(name, *FIXRES[name], args.data, args.work)
        elif name in ENSEMBLES:
            row = ensemble_row(name, ENSEMBLES[name], args.data, args.work)
        else:
            row = matched_row(name, *MATCHED[name], args.data, args.work)
        rows.append(row)
        saved["rows"][name] = row
        saved["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
        results_path.write_text(json.dumps(saved, indent=2) + "\n")
        print_table(rows)
    print(f"\nsaved {results_path}")


if __name__ == "__main__":
    main()
