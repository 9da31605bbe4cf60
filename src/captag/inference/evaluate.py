"""`evaluate` and `predict` of a finished run: scores on labelled rows, or a Kaggle submission."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from captag.data import LabelMap, check_images, load_split, read_records, resolve_image_dir
from captag.inference.predictor import Predictor
from captag.evaluation.metrics import compute_metrics, load_thresholds, per_class_report, predict_labels
from captag.evaluation.size import check_budget, file_mb, parameter_count, parameter_mb
from captag.evaluation.speed import Timer, throughput


def _records_and_images(predictor: Predictor, csv_path, images, labels: LabelMap):
    records = read_records(csv_path, labels.ids)
    if predictor.model.image is None:
        return records, None
    image_dir = resolve_image_dir(csv_path, images)
    bad = check_images([r.image_id for r in records], image_dir)
    if bad:
        listing = "\n".join(f"  {b.image_id}: {b.reason}" for b in bad[:50])
        raise FileNotFoundError(f"{len(bad)} images in {image_dir} cannot be used:\n{listing}\n"
                                "Fix them, or pass the right folder with --images DIR.")
    return records, image_dir


def _only_split(records, run, split: str):
    train_ids, val_ids = load_split(run.split)
    wanted = set(val_ids if split == "val" else train_ids)
    chosen = [r for r in records if r.image_id in wanted]
    if not chosen:
        raise ValueError(f"No row of the CSV is in the run's {split} split: --split {split} is "
                         "meant for the CSV that the run was trained on.")
    return chosen


def evaluate_run(run_dir, csv_path, images=None, batch_size: int = 32, num_workers: int = 1,
                 engine: str = "auto", progress: bool = True, split: str | None = None) -> dict:
    """Scores of the run's model with its tuned threshold on the labelled rows of `csv_path`.

    With `split` ('val' or 'train'), only the rows of that split of the run are scored.
    """
    predictor = Predictor(run_dir, engine)
    run, labels = predictor.run, LabelMap.load(predictor.run.labels)
    records, image_dir = _records_and_images(predictor, csv_path, images, labels)
    if split:
        records = _only_split(records, run, split)
    if any(r.labels is None for r in records):
        raise ValueError(f"{csv_path} has no Labels column: evaluate needs labelled rows; "
                         "use `captag predict` for unlabelled ones.")
    with Timer() as timer:
        probs = predictor.predict_probs(records, image_dir, batch_size, num_workers, progress)
    targets = labels.encode_many([r.labels for r in records])
    threshold = load_thresholds(run.thresholds)
    at_least_one = predictor.cfg.at_least_one
    metrics = compute_metrics(targets, probs, threshold, at_least_one)
    model_mb = file_mb(run.model)
    return {
        **{k: float(v) for k, v in metrics.items()},
        "n_samples": len(records), "threshold": threshold,
        "f1_samples_at_0.5": float(compute_metrics(targets, probs, 0.5, at_least_one)["f1_samples"]),
        "seconds": round(timer.seconds, 3),
        "samples_per_second": round(throughput(len(records), timer.seconds), 2),
        "engine": predictor.engine, "model_mb": round(model_mb, 2),
        "parameter_mb_fp32": round(parameter_mb(predictor.model), 2),
        "parameters": parameter_count(predictor.model), "within_budget": check_budget(model_mb),
        "per_class": per_class_report(targets, probs, threshold, labels.ids, labels.names),
    }


def write_submission(path, image_ids, predicted: np.ndarray, labels: LabelMap) -> None:
    """A Kaggle submission: ImageID,Labels with labels space-separated."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageID", "Labels"])
        for image_id, row in zip(image_ids, predicted):
            writer.writerow([image_id, " ".join(str(label) for label in labels.decode(row))])


def predict_run(run_dir, csv_path, output, images=None, batch_size: int = 32,
                num_workers: int = 1, engine: str = "auto", progress: bool = True) -> dict:
    """Predict labels for every row of `csv_path` and write them as a submission to `output`."""
    predictor = Predictor(run_dir, engine)
    labels = LabelMap.load(predictor.run.labels)
    records, image_dir = _records_and_images(predictor, csv_path, images, labels)
    with Timer() as timer:
        probs = predictor.predict_probs(records, image_dir, batch_size, num_workers, progress)
    threshold = load_thresholds(predictor.run.thresholds)
    predicted = predict_labels(probs, threshold, predictor.cfg.at_least_one)
    write_submission(output, [r.image_id for r in records], predicted, labels)
    return {"rows": len(records), "output": str(output), "seconds": round(timer.seconds, 3),
            "samples_per_second": round(throughput(len(records), timer.seconds), 2)}
