"""Evaluation: metrics, thresholds, and model size and speed."""

from captag.evaluation.metrics import (
    compute_metrics,
    load_thresholds,
    per_class_report,
    predict_labels,
    save_thresholds,
    tune_threshold,
)
from captag.evaluation.size import BUDGET_MB, check_budget, file_mb, parameter_count, parameter_mb
from captag.evaluation.speed import Timer, throughput

__all__ = [
    "BUDGET_MB",
    "Timer",
    "check_budget",
    "compute_metrics",
    "file_mb",
    "load_thresholds",
    "parameter_count",
    "parameter_mb",
    "per_class_report",
    "predict_labels",
    "save_thresholds",
    "throughput",
    "tune_threshold",
]
