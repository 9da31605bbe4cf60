"""Multi-label metrics for captag: label prediction from probabilities, mean (sample) F1
and friends, a per-class report, global threshold tuning, and threshold files.

The competition metric "mean F1" is the per-sample F1 averaged over rows,
i.e. scikit-learn ``f1_score(y_true, y_pred, average="samples")``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from captag.files import write_json

DEFAULT_THRESHOLD = 0.5


def predict_labels(
    probs: np.ndarray, threshold: float | np.ndarray = DEFAULT_THRESHOLD, at_least_one: bool = True
) -> np.ndarray:
    """Boolean label matrix ``probs >= threshold`` (scalar or per-class threshold).

    With ``at_least_one``, a row with no label gets its arg-max label: every image has
    at least one label, and the sample F1 of an empty prediction is 0.
    """
    probs = np.asarray(probs, dtype=float)
    pred = probs >= np.asarray(threshold, dtype=float)
    if at_least_one and pred.size:
        empty = ~pred.any(axis=1)
        pred[empty, probs[empty].argmax(axis=1)] = True
    return pred


def _average_precision(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Average precision per class; NaN for a class with no positive."""
    return np.array([
        average_precision_score(y_true[:, c], probs[:, c]) if y_true[:, c].any() else np.nan
        for c in range(y_true.shape[1])
    ])


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, threshold: float | np.ndarray = DEFAULT_THRESHOLD,
    at_least_one: bool = True,
) -> dict[str, float]:
    """Sample, micro and macro F1, micro precision and recall, and mAP.

    ``map`` is the macro average precision over classes with at least one positive
    (NaN if there is none). Precision/recall/F1 use ``zero_division=0``.
    """
    y_true = np.asarray(y_true).astype(bool)
    probs = np.asarray(probs, dtype=float)
    pred = predict_labels(probs, threshold, at_least_one)
    ap = _average_precision(y_true, probs)
    return {
        "f1_samples": float(f1_score(y_true, pred, average="samples", zero_division=0)),
        "f1_micro": float(f1_score(y_true, pred, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y_true, pred, average="macro", zero_division=0)),
        "precision_micro": float(precision_score(y_true, pred, average="micro", zero_division=0)),
        "recall_micro": float(recall_score(y_true, pred, average="micro", zero_division=0)),
        "map": float(np.nanmean(ap)) if not np.isnan(ap).all() else float("nan"),
        "n_samples": float(len(y_true)),
    }


def per_class_report(
    y_true: np.ndarray, probs: np.ndarray, threshold: float | np.ndarray,
    label_ids: list, label_names: list[str],
) -> list[dict]:
    """One row per class: label, name, support, precision, recall, f1, ap (NaN if no positive).

    Predictions use ``predict_labels`` with ``at_least_one=True``, as in ``compute_metrics``.
    """
    y_true = np.asarray(y_true).astype(bool)
    probs = np.asarray(probs, dtype=float)
    pred = predict_labels(probs, threshold, at_least_one=True)
    kw = dict(average=None, zero_division=0)
    precision = precision_score(y_true, pred, **kw)
    recall = recall_score(y_true, pred, **kw)
    f1 = f1_score(y_true, pred, **kw)
    ap = _average_precision(y_true, probs)
    return [
        {"label": label, "name": name, "support": int(y_true[:, c].sum()),
         "precision": float(precision[c]), "recall": float(recall[c]),
         "f1": float(f1[c]), "ap": float(ap[c])}
        for c, (label, name) in enumerate(zip(label_ids, label_names))
    ]


def _f1_samples(y_true: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-row F1, 0 for a row where truth and prediction are both empty."""
    tp = (y_true & pred).sum(axis=1)
    denom = y_true.sum(axis=1) + pred.sum(axis=1)
    return float(np.mean(np.divide(2 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)))


def tune_threshold(
    y_true: np.ndarray, probs: np.ndarray, grid: np.ndarray | None = None, at_least_one: bool = True
) -> tuple[float, float]:
    """The one global threshold in ``grid`` that maximises f1_samples on (validation) data.

    Default grid: 0.05..0.95 in steps of 0.025. Ties go to the lowest threshold.
    Returns ``(threshold, best f1_samples)``.
    """
    if grid is None:
        grid = np.round(np.arange(0.05, 0.95 + 1e-9, 0.025), 4)
    y_true = np.asarray(y_true).astype(bool)
    probs = np.asarray(probs, dtype=float)
    scores = [_f1_samples(y_true, predict_labels(probs, t, at_least_one)) for t in grid]
    best = int(np.argmax(scores))
    return float(grid[best]), scores[best]


def save_thresholds(
    path: str | Path, threshold: float, f1_at_threshold: float | None,
    f1_at_half: float | None, source: str | None = "validation",
) -> None:
    """Write the tuned threshold and the f1_samples it gave (and at 0.5) as JSON;
    `source` None means no tuning (no validation split): the threshold is the default."""
    write_json(path, {
        "threshold": float(threshold),
        "default": DEFAULT_THRESHOLD,
        "tuned_on": source,
        "f1_samples_tuned": f1_at_threshold,
        "f1_samples_at_0.5": f1_at_half,
    })


def load_thresholds(path: str | Path) -> float:
    """The threshold in a file from ``save_thresholds``; 0.5 if the file says no tuning
    (``threshold`` missing or null, or ``tuned_on`` null/empty/"none")."""
    data = json.loads(Path(path).read_text())
    tuned_on = data.get("tuned_on")
    if data.get("threshold") is None or not tuned_on or str(tuned_on).lower() == "none":
        return float(data.get("default", DEFAULT_THRESHOLD))
    return float(data["threshold"])
