"""Tests for captag.evaluation: metrics, thresholds, size and speed."""

import json
import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from captag.evaluation import (
    BUDGET_MB,
    Timer,
    check_budget,
    compute_metrics,
    file_mb,
    load_thresholds,
    parameter_count,
    parameter_mb,
    per_class_report,
    predict_labels,
    save_thresholds,
    throughput,
    tune_threshold,
)

# Hand-made example. At 0.5 the predictions are [[1,0,0],[0,1,1],[1,1,0]]:
# row F1s 2/3, 2/3, 1 -> f1_samples 7/9; micro tp=4, pred=5, true=5 -> P=R=F1=0.8;
# per-class F1 1, 1, 0 -> macro 2/3; AP 1, 1, 1/2 -> map 5/6.
Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
P = np.array([[0.9, 0.2, 0.4], [0.1, 0.8, 0.7], [0.6, 0.7, 0.1]])


def test_compute_metrics_hand_checked():
    m = compute_metrics(Y, P)
    assert m["f1_samples"] == pytest.approx(7 / 9)
    assert m["f1_micro"] == pytest.approx(0.8)
    assert m["precision_micro"] == pytest.approx(0.8)
    assert m["recall_micro"] == pytest.approx(0.8)
    assert m["f1_macro"] == pytest.approx(2 / 3)
    assert m["map"] == pytest.approx(5 / 6)
    assert m["n_samples"] == 3
    assert m["f1_samples"] == pytest.approx(f1_score(Y, P >= 0.5, average="samples"))


def test_map_skips_classes_without_positives():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    p = np.array([[0.9, 0.8], [0.2, 0.1], [0.7, 0.3]])
    assert compute_metrics(y, p)["map"] == pytest.approx(1.0)


def test_predict_labels_at_least_one_fills_empty_rows_with_argmax():
    probs = np.array([[0.1, 0.3, 0.2], [0.6, 0.7, 0.1], [0.05, 0.01, 0.02]])
    pred = predict_labels(probs, 0.5)
    assert pred.dtype == bool
    np.testing.assert_array_equal(pred, [[0, 1, 0], [1, 1, 0], [1, 0, 0]])
    assert not predict_labels(probs, 0.5, at_least_one=False)[0].any()
    # The fill raises sample F1 above the empty prediction's 0.
    y = np.array([[0, 1, 0], [1, 1, 0], [1, 0, 0]])
    assert compute_metrics(y, probs)["f1_samples"] == pytest.approx(1.0)
    assert compute_metrics(y, probs, at_least_one=False)["f1_samples"] == pytest.approx(1 / 3)


def test_predict_labels_per_class_threshold():
    probs = np.array([[0.4, 0.4], [0.8, 0.8]])
    pred = predict_labels(probs, np.array([0.3, 0.9]), at_least_one=False)
    np.testing.assert_array_equal(pred, [[1, 0], [1, 0]])


def _synthetic(n=3600, c=18, seed=0):
    """Positives score in [0.3, 0.45], negatives in [0.05, 0.29]: the optimum is 0.3."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, c)) < 0.15
    y[np.arange(n), rng.integers(0, c, n)] = True
    probs = np.where(y, rng.uniform(0.3, 0.45, (n, c)), rng.uniform(0.05, 0.29, (n, c)))
    return y.astype(int), probs


def test_tune_threshold_recovers_known_optimum_fast():
    y, probs = _synthetic()
    start = time.perf_counter()
    t, best = tune_threshold(y, probs)
    assert time.perf_counter() - start < 1.0
    assert t == pytest.approx(0.3)
    assert best == pytest.approx(1.0)
    assert best > compute_metrics(y, probs, 0.5)["f1_samples"]


def test_tune_threshold_matches_sklearn_and_beats_half():
    rng = np.random.default_rng(1)
    y = (rng.random((500, 18)) < 0.2).astype(int)
    probs = np.clip(0.35 * y + rng.random((500, 18)) * 0.6, 0, 1)
    t, best = tune_threshold(y, probs)
    assert best == pytest.approx(compute_metrics(y, probs, t)["f1_samples"])
    assert best >= compute_metrics(y, probs, 0.5)["f1_samples"]
    grid = np.round(np.arange(0.05, 0.951, 0.025), 4)
    brute = [f1_score(y, predict_labels(probs, g), average="samples", zero_division=0) for g in grid]
    assert best == pytest.approx(max(brute))
    assert t == pytest.approx(grid[int(np.argmax(brute))])


def test_per_class_report_values():
    rows = per_class_report(Y, P, 0.5, [10, 11, 12], ["cat", "dog", "car"])
    assert [r["label"] for r in rows] == [10, 11, 12]
    assert [r["name"] for r in rows] == ["cat", "dog", "car"]
    assert [r["support"] for r in rows] == [2, 2, 1]
    assert rows[0]["f1"] == pytest.approx(1.0) and rows[0]["ap"] == pytest.approx(1.0)
    car = rows[2]
    assert (car["precision"], car["recall"], car["f1"]) == (0.0, 0.0, 0.0)
    assert car["ap"] == pytest.approx(0.5)


def test_thresholds_round_trip(tmp_path):
    path = tmp_path / "thresholds.json"
    save_thresholds(path, 0.325, 0.71, 0.68)
    data = json.loads(path.read_text())
    assert data == {"threshold": 0.325, "default": 0.5, "tuned_on": "validation",
                    "f1_samples_tuned": 0.71, "f1_samples_at_0.5": 0.68}
    assert load_thresholds(path) == pytest.approx(0.325)


def test_load_thresholds_without_tuning_is_half(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"threshold": None, "default": 0.5, "tuned_on": None}))
    assert load_thresholds(path) == 0.5


def test_check_budget_warns_only_over():
    assert BUDGET_MB == 100.0
    with pytest.warns(UserWarning, match="100 MB budget"):
        assert check_budget(120.5) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_budget(99.9) is True
        assert check_budget(100.0) is True


def test_parameter_size_of_linear(tmp_path):
    model = torch.nn.Linear(1000, 100)  # 100,100 float32 parameters
    assert parameter_count(model) == 100_100
    assert parameter_mb(model) == pytest.approx(100_100 * 4 / 2**20)
    model.register_buffer("stat", torch.zeros(10, dtype=torch.float64))
    assert parameter_count(model) == 100_100
    assert parameter_mb(model) == pytest.approx((100_100 * 4 + 80) / 2**20)
    f = tmp_path / "blob.bin"
    f.write_bytes(b"\0" * 2**20)
    assert file_mb(f) == pytest.approx(1.0)


def test_timer_and_throughput():
    with Timer() as timer:
        time.sleep(0.01)
    assert timer.seconds >= 0.01
    assert throughput(100, 2.0) == 50.0
    assert throughput(100, 0.0) == 0.0
