"""The quality levers of a run: ASL, the EMA of the weights, min_steps, early stopping and the
time limit with its epoch planner, each a setting with its effect checked on the real mini data."""

import dataclasses
import json
import time

import lightning as L
import pytest
import torch
from timm.loss import AsymmetricLossMultiLabel

from captag.config import RunConfig, seconds
from captag.errors import ConfigError
from captag.training.module import WeightEMA, lr_factor, make_loss
from captag.training.trainer import planned_epochs
from conftest import MINI, frozen_config, small_csv


def test_durations_are_read_in_seconds_minutes_or_hours():
    assert [seconds(d) for d in ("90s", "20m", "1.5h", "20", 20)] == [90, 1200, 5400, 1200, 1200]
    assert RunConfig(time_limit=20).time_limit == "20"  # YAML's time_limit: 20
    for bad in ("soon", "-5m", "0", "m"):
        with pytest.raises(ConfigError, match="time_limit"):
            RunConfig(time_limit=bad)


def test_loss_names_are_checked_and_asl_is_timms():
    with pytest.raises(ConfigError, match="did you mean 'asl'"):
        RunConfig(loss="asls")
    logits, targets = torch.randn(4, 18), (torch.rand(4, 18) > 0.7).float()
    ours = make_loss("asl", gamma_neg=2, gamma_pos=1, clip=0.1)(logits, targets)
    timms = AsymmetricLossMultiLabel(gamma_neg=2, gamma_pos=1, clip=0.1, reduction="mean")
    assert torch.allclose(ours, timms(logits, targets))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(make_loss("bce")(logits, targets), bce)


def test_weight_ema_averages_trainable_weights_and_swaps_them_in_and_out():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    ema = WeightEMA(model, decay=0.5)
    assert ema.names == ["1.weight", "1.bias"]
    start = model[1].weight.detach().clone()
    with torch.no_grad():
        model[1].weight.add_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 1/10): 0.1 of the old, 0.9 of the new
    assert torch.allclose(ema.w0, start + 0.9)
    raw = model[1].weight.detach().clone()
    with ema.swapped_in(model):
        assert torch.allclose(model[1].weight, start + 0.9)
    assert torch.equal(model[1].weight, raw)
    ema.copy_to(model)
    assert torch.allclose(model[1].weight, start + 0.9)


def test_the_schedule_follows_the_time_budget_when_it_runs_ahead_of_the_steps():
    assert lr_factor(50, 100, 0.0, "linear") == pytest.approx(0.5)
    assert lr_factor(50, 100, 0.0, "linear", time_used=0.9) == pytest.approx(0.1)
    assert lr_factor(50, 100, 0.0, "linear", time_used=0.2) == pytest.approx(0.5)
    assert lr_factor(50, 100, 0.0, "linear", time_used=1.5) == 0.0


def test_min_steps_gives_small_data_more_epochs_and_leaves_big_data_alone():
    cfg = RunConfig(batch_size=32, val_fraction=0.2)
    assert (cfg.epochs, cfg.min_steps) == (None, 300)
    assert planned_epochs(cfg, 1000, 1) == 12  # 800 rows: 25 steps an epoch
    assert planned_epochs(cfg, 18000, 1) == 3  # 450 steps an epoch
    assert planned_epochs(cfg, 1000, 2) == 24  # 13 steps an epoch on each of 2 processes
    assert planned_epochs(cfg.update(min_steps=0), 1000, 1) == 3
    assert planned_epochs(cfg.update(epochs=2), 1000, 1) == 2  # given epochs are kept
    assert planned_epochs(cfg.update(time_limit="1h"), 18000, 1) == 50  # until the first epoch


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return small_csv(tmp_path_factory.mktemp("levers") / "small.csv", 300)


def _train(tmp_path, cache_dir, small, **settings):
    from captag.training.trainer import train
    cfg = frozen_config(cache_dir, csv=str(small), images=str(MINI.parent / "data"))
    cfg = dataclasses.replace(cfg, **settings)  # (update ignores None: epochs=None is "unset")
    summary = train(cfg, tmp_path / "run", progress=False)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    return summary, rows


def test_min_steps_and_early_stopping_set_how_long_a_run_trains(tmp_path, cache_dir, small):
    # 240 training rows in batches of 32: 8 steps an epoch, so 40 steps take 5 epochs
    summary, rows = _train(tmp_path, cache_dir, small, epochs=None, min_steps=40, head_lr=1e-5)
    assert len(rows) == summary["epochs_planned"] == summary["epochs_run"] == 5
    assert not summary["stopped_early"]

    # a learning rate this small barely moves the F1: patience 1 stops long before 30 epochs
    summary, rows = _train(tmp_path / "b", cache_dir, small, epochs=30, patience=1, head_lr=1e-7)
    assert summary["stopped_early"] and len(rows) == summary["epochs_run"] < 30
    assert summary["best_epoch"] == len(rows) - 1


def test_ema_is_scored_beside_the_raw_weights_and_the_better_is_kept(tmp_path, cache_dir, small):
    summary, _ = _train(tmp_path, cache_dir, small, epochs=3, ema=0.9, loss="asl")
    assert isinstance(summary["ema_chosen"], bool)
    from captag.inference.evaluate import evaluate_run
    scores = evaluate_run(tmp_path / "run", str(small), str(MINI.parent / "data"), split="val",
                          progress=False)
    assert scores["f1_samples"] == pytest.approx(summary["val"]["f1_samples"], abs=1e-3)


def test_a_time_limit_stops_training_cleanly_with_the_best_checkpoint(tmp_path, cache_dir, small):
    summary, rows = _train(tmp_path, cache_dir, small, epochs=1000, time_limit="25s")
    assert summary["stopped_early"] and 1 <= len(rows) < 1000
    assert summary["train_seconds"] < 60
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["best_epoch"] <= len(rows)


class _SlowEpochs(L.Callback):
    """Makes every epoch take about a second, so that a budget of seconds holds a few."""

    def on_train_epoch_start(self, trainer, module):
        time.sleep(1.0)


def test_a_time_limit_plans_the_epochs_that_fit_from_the_first_one(tmp_path, cache_dir, small):
    from captag.training.trainer import train
    cfg = frozen_config(cache_dir, csv=str(small), images=str(MINI.parent / "data"),
                        time_limit="30s")
    cfg = dataclasses.replace(cfg, epochs=None)
    summary = train(cfg, tmp_path / "run", callbacks=[_SlowEpochs()], progress=False)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert 2 <= summary["epochs_planned"] < 30  # planned after the first epoch, not the cap of 50
    assert len(rows) == summary["epochs_run"] == summary["epochs_planned"]  # none cut short
    assert not summary["stopped_early"] and summary["train_seconds"] <= 30
