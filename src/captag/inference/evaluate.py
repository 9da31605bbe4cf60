"""`evaluate` and `predict` of a finished run: scores on labelled rows, or a Kaggle submission.

Both check the run folder (and `predict` its output path) before reading any data, and read and
check the data before running the model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from captag.config import PREDICT_BATCH_SIZE
from captag.data import Data, DataOptions, read_data, screen_images
from captag.data.sources import require_labelled
from captag.errors import RunFolderError
from captag.evaluation.metrics import compute_metrics, per_class_report, predict_labels
from captag.evaluation.size import check_budget
from captag.evaluation.speed import Timer, throughput
from captag.files import jsonable
from captag.inference.outputs import check_output, write_predictions, write_probabilities


def _predictor(run_dir, engine: str, load, image_size: int | None = None):
    """`load(run_dir)` when given (e.g. `captag.deploy.load_predictor`, which also opens an
    exported folder), else the run folder's Predictor."""
    if load is not None:
        return load(run_dir, image_size=image_size) if image_size else load(run_dir)
    from captag.inference.predictor import Predictor
    return Predictor(run_dir, engine, image_size=image_size)


def read_for(predictor, path, images=None, options: DataOptions | None = None,
             scored: bool = True) -> Data:
    """The data in `path`, read with the run's remembered column settings (those of `options`
    win); when it is `scored`, its labels are checked against the run's."""
    options = options or DataOptions()
    if images:
        options = dataclasses.replace(options, images=str(images))
    return read_data(path, options.over(predictor.data_settings),
                     known=predictor.labels if scored else None)


def _image_dir(predictor, data: Data, records) -> Path | None:
    """The image folder, once every image of `records` decodes; None for a text-only model."""
    if not predictor.has_image:
        return None
    image_dir = data.image_dir()
    screen_images(records, image_dir, can_skip=False)
    return image_dir


def _split_ids(predictor, split: str) -> set[str]:
    """The keys (image IDs) of the run's `split` ('train' or 'val')."""
    train_ids, val_ids = predictor.load_split()
    if split == "val" and not val_ids:
        raise RunFolderError(f"The run in {predictor.info()['path']} has no validation split (it was trained "
                             "with val_fraction 0): evaluate it on a labelled CSV without --split.")
    return set(val_ids if split == "val" else train_ids)


def _only_split(records, wanted: set[str], split: str):
    chosen = [r for r in records if r.key in wanted]
    if not chosen:
        raise RunFolderError(f"No row of the data is in the run's {split} split: --split {split} "
                             "is meant for the CSV that the run was trained on.")
    return chosen


def evaluate_run(run_dir, csv_path, images=None, batch_size: int = PREDICT_BATCH_SIZE, num_workers: int = 1,
                 engine: str = "auto", progress: bool = True, split: str | None = None,
                 load=None, image_size: int | None = None,
                 options: DataOptions | None = None) -> dict:
    """Scores of the run's model with its tuned threshold on the labelled rows of `csv_path`
    (any dataset `read_data` reads, with `options`), as strict-JSON-able values (a score that
    is NaN, e.g. the AP of a class without positives, is None).

    With `split` ('val' or 'train'), only the rows of that split of the run are scored.
    `load` (e.g. `captag.deploy.load_predictor`) opens `run_dir` instead of the run folder's
    Predictor. `image_size` scores a run folder's model at another image side (FixRes).
    """
    predictor = _predictor(run_dir, engine, load, image_size)
    wanted = _split_ids(predictor, split) if split else None
    data = read_for(predictor, csv_path, images, options)
    require_labelled(data, "evaluate")
    records = data.records if wanted is None else _only_split(data.records, wanted, split)
    image_dir = _image_dir(predictor, data, records)
    with Timer() as timer:
        probs = predictor.predict_probs(records, image_dir, batch_size, num_workers, progress)
    return jsonable({**_scores(predictor, records, probs),
                     "seconds": round(timer.seconds, 3),
                     "samples_per_second": round(throughput(len(records), timer.seconds), 2)})


def _scores(predictor, records, probs: np.ndarray) -> dict:
    labels, threshold = predictor.labels, predictor.threshold
    targets = labels.encode_many([r.labels for r in records])
    at_least_one = predictor.at_least_one
    metrics = compute_metrics(targets, probs, threshold, at_least_one)
    info = predictor.info()
    sizes = info["sizes"]
    return {
        **metrics, "n_samples": len(records), "threshold": threshold,
        "f1_samples_at_0.5": compute_metrics(targets, probs, 0.5, at_least_one)["f1_samples"],
        "engine": info["model"]["engine"], "runtimes": info["model"].get("runtimes"),
        "image_size": sizes["image_size"],
        "model_mb": sizes["model_mb"],
        "parameter_mb_fp32": sizes["parameter_mb_fp32"], "parameters": sizes["parameters"],
        "within_budget": check_budget(sizes["model_mb"]),
        "per_class": per_class_report(targets, probs, threshold, labels.ids, labels.names),
    }


def predict_run(run_dir, csv_path, output, images=None, batch_size: int = PREDICT_BATCH_SIZE,
                num_workers: int = 1, engine: str = "auto", progress: bool = True,
                load=None, options: DataOptions | None = None,
                probabilities: bool = False) -> dict:
    """Predict labels for every row of `csv_path` and write them to `output`: a Kaggle
    submission for COMP5329 data, else in the data's own label form (`outputs`); with
    `probabilities`, every label's probability instead (`load`: as in `evaluate_run`)."""
    output = check_output(output)
    predictor = _predictor(run_dir, engine, load)
    data = read_for(predictor, csv_path, images, options, scored=False)
    image_dir = _image_dir(predictor, data, data.records)
    with Timer() as timer:
        probs = predictor.predict_probs(data.records, image_dir, batch_size, num_workers,
                                        progress)
    if probabilities:
        write_probabilities(output, data, probs, predictor.labels)
    else:
        predicted = predict_labels(probs, predictor.threshold, predictor.at_least_one)
        write_predictions(output, data, predicted, predictor.labels, _form(predictor, data))
    return {"rows": len(data.records), "output": str(output), "seconds": round(timer.seconds, 3),
            "samples_per_second": round(throughput(len(data.records), timer.seconds), 2)}


def _form(predictor, data: Data):
    """How to write the labels: as the data writes them, else as the run's training data."""
    if data.labels is not None or data.is_comp5329:
        return data.labels
    return DataOptions(**predictor.data_settings).label_form()
