"""`train`: one run from a CSV to a finished run folder, on Lightning.

Steps: take the run folder's lock, read the data, build the model, then inside Lightning's fit
check the images, split them, fill the feature cache, write config.yaml, fit with checkpoints,
then tune the decision threshold on validation and save the best model. Without a validation
split (val_fraction 0) the last epoch is kept and the threshold is 0.5.

Under DDP every process runs `train`; rank 0 alone holds the lock and writes the run folder,
and one process per node checks the images and fills the cache (`CaptagDataModule.prepare_data`)
while the others wait, then read the split and the cache.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import move_data_to_device
from lightning.pytorch.utilities.exceptions import SIGTERMException

from captag.config import DEFAULT_EPOCHS, FSDP_NEEDS_GPU, RunConfig, seconds
from captag.data import Data, DataOptions, LabelMap, label_map, read_data, split_ids
from captag.data.images import screen_images
from captag.data.sources import require_labelled
from captag.data.split import in_split_order, load_split, save_split
from captag.errors import ConfigError, RunFolderError, TrainingInterrupted
from captag.evaluation.metrics import (compute_metrics, per_class_report, save_thresholds,
                                       tune_threshold)
from captag.evaluation.size import check_budget, file_mb, parameter_count, parameter_mb
from captag.models import engines
from captag.models.fusion import probabilities
from captag.models.registry import model_from_config, weights_summary
from captag.runs import RunFolder
from captag.training.cache import FeatureCache
from captag.training.callbacks import MetricsCSV, RngState, TimePlanner, env_hooks
from captag.training.datamodule import CaptagDataModule
from captag.training.module import CaptagModule, make_loss

log = logging.getLogger(__name__)


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def is_rank_zero() -> bool:
    """Whether this is rank 0, known before Lightning starts: every rank variable that is set
    (torchrun's RANK and GROUP_RANK, SLURM's SLURM_PROCID, LOCAL_RANK and NODE_RANK from
    Lightning's own launcher) is 0."""
    return all(int(os.environ.get(name) or 0) == 0 for name in RANK_VARIABLES)


class RunRecords:
    """The run's train and validation records (the data module's splitter): the preparing
    process checks the images and splits, and rank 0 writes split.json, bad_images.json,
    labels.json and config.yaml; the other processes read split.json back."""

    def __init__(self, cfg: RunConfig, run: RunFolder, data: Data, image_dir: Path,
                 labels: LabelMap, check_images: bool, resume: bool, progress: bool):
        self.cfg, self.run, self.records, self.image_dir = cfg, run, data.records, image_dir
        self.skipped = data.skipped
        self.labels, self.check_images = labels, check_images
        self.resume, self.progress = resume, progress
        self._screened = None

    def prepare(self):
        split = self._split(self.screened(), load=self.resume and self.run.split.exists())
        if is_rank_zero():  # written once training really starts
            self.labels.save(self.run.labels)
            self.cfg.save(self.run.config)
            if self.skipped:
                self.run.write_json(self.run.bad_rows, self.skipped)
            warn_about_labels(self.labels, *split)
        return split

    def load(self):
        return self._split(self.records, load=True)

    def screened(self):
        """The records to train on, their images checked once (on the first call)."""
        if self._screened is None:
            self._screened = self._screen() if self.check_images else self.records
        return self._screened

    def _screen(self):
        """Records whose images decode; with skip_bad the others are left out and listed."""
        kept, bad = screen_images(self.records, self.image_dir, skip_bad=self.cfg.skip_bad,
                                  progress=self.progress)
        if bad and is_rank_zero():
            self.run.write_json(self.run.bad_images, [{"image_id": b.image_id, "reason": b.reason}
                                                      for b in bad])
        return kept

    def _split(self, records, load: bool):
        if load:
            train_ids, val_ids = load_split(self.run.split)
        else:
            keys = list(dict.fromkeys(r.key for r in records))  # an image's rows stay together
            train_ids, val_ids = split_ids(keys, self.cfg.val_fraction, self.cfg.seed)
            if is_rank_zero():
                save_split(self.run.split, train_ids, val_ids, self.cfg.seed,
                           self.cfg.val_fraction)
        return in_split_order(records, train_ids), in_split_order(records, val_ids)


RARE = 5  # training rows under which a label is named in a warning


def warn_about_labels(labels: LabelMap, train: list, val: list) -> None:
    """Warn about labels with fewer than RARE training rows, and labels that no validation
    row has (their F1 is not measured)."""
    def counts(records):
        found = dict.fromkeys(labels.ids, 0)
        for record in records:
            for label in record.labels:
                found[label] += 1
        return found
    rare = [f"{label} ({n})" for label, n in counts(train).items() if n < RARE]
    if rare:
        log.warning("%d labels have fewer than %d training rows: %s", len(rare), RARE,
                    ", ".join(rare[:50]))
    unseen = [str(label) for label, n in counts(val).items() if n == 0] if val else []
    if unseen:
        log.warning("%d labels are missing from the validation split: %s", len(unseen),
                    ", ".join(unseen[:50]))


def _prepare_folder(cfg: RunConfig | None, run: RunFolder, resume: bool) -> RunConfig:
    """The run's settings; a folder that holds a finished or resumable run is refused, one
    left by a run that failed before its first checkpoint is reused."""
    if resume:
        if not run.resumable():
            raise RunFolderError(
                f"Cannot resume {run.path}: it has no checkpoints/last.ckpt (the run stopped "
                f"before its first epoch ended). Train it again with --out {run.path}.")
        return run.load_config()
    if run.holds_run():
        raise RunFolderError(f"{run.path} already holds a run. Pass --resume {run.path} to "
                             "continue it, or choose another --out folder.")
    if not cfg.csv:
        raise RunFolderError("No training data: pass --csv PATH (or csv: in the config file).")
    if is_rank_zero():
        run.clear()
    return cfg


FINISH_SHARE = 0.05  # of a time budget, kept for scoring and saving after fitting


BUDGET_EPOCHS = 50  # the most epochs a time budget plans


def planned_epochs(cfg: RunConfig, n_records: int, world_size: int) -> int:
    """`epochs` when set; under a time limit, BUDGET_EPOCHS, which `TimePlanner` lowers after
    the first epoch; else DEFAULT_EPOCHS, raised so that training takes at least `min_steps`
    optimiser steps on `n_records` rows."""
    if cfg.epochs is not None:
        return cfg.epochs
    if cfg.time_limit is not None:
        return BUDGET_EPOCHS
    train_rows = n_records - round(n_records * cfg.val_fraction)
    steps = max(math.ceil(train_rows / (cfg.batch_size * world_size)), 1)
    return max(DEFAULT_EPOCHS, math.ceil(cfg.min_steps / steps))


def fit_deadline(cfg: RunConfig, started: float) -> float | None:
    """The time.perf_counter() value by which fitting ends under the time limit (None
    without one): the limit from `started`, less a share kept for scoring and saving."""
    if cfg.time_limit is None:
        return None
    return started + seconds(cfg.time_limit) * (1 - FINISH_SHARE)


def _trainer(cfg: RunConfig, run: RunFolder, callbacks, progress: bool, validate: bool,
             deadline: float | None):
    best = ModelCheckpoint(dirpath=run.checkpoints, filename="best",
                           monitor="val_f1_samples" if validate else None, mode="max",
                           enable_version_counter=False)
    # Lightning writes save_last's last.ckpt only in epochs that improve best.ckpt; this one
    # is written every epoch, after best.ckpt, so --resume continues from the last epoch.
    last = ModelCheckpoint(dirpath=run.checkpoints, filename="last", enable_version_counter=False)
    extra = [TQDMProgressBar(refresh_rate=10)] if progress else []
    if cfg.patience and validate:
        extra.append(EarlyStopping("val_f1_samples", mode="max", patience=cfg.patience))
    if deadline is not None:
        extra.append(TimePlanner(deadline, plan=cfg.epochs is None))
    return L.Trainer(
        max_epochs=cfg.epochs or DEFAULT_EPOCHS,
        accelerator=cfg.accelerator, devices=cfg.devices,
        strategy=cfg.strategy, num_nodes=cfg.num_nodes,
        precision=fit_precision(cfg), deterministic=False, num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
        callbacks=[best, last, MetricsCSV(run.metrics), RngState(), *env_hooks(), *extra, *callbacks],
        logger=CSVLogger(run.path, name="logs", version=""), log_every_n_steps=20,
        enable_progress_bar=progress, enable_model_summary=False)


def fit_precision(cfg: RunConfig) -> str:
    """The fit's Lightning precision: `cfg.precision`, where auto is bf16-mixed when training on
    a CPU with bf16 instructions (the default's fit took 0.75x fp32's time on an avx512_bf16
    CPU, both in channels_last, validation samples-F1 -0.0003), else 32-true."""
    if cfg.precision != "auto":
        return cfg.precision
    on_cpu = cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and not torch.cuda.is_available()
                                          and not torch.backends.mps.is_available())
    return "bf16-mixed" if on_cpu and engines.has_bf16() else "32-true"


def train(cfg: RunConfig | None, out: str | Path, resume: bool = False, callbacks=(),
          progress: bool = True) -> dict:
    """Train one model into the run folder `out` and return its summary (empty on ranks other
    than 0). With `resume`, continue the run in `out` with its own settings."""
    run = RunFolder(out)
    with run.lock() if is_rank_zero() else contextlib.nullcontext():
        return _train(cfg, run, resume, list(callbacks), progress)


def _train(cfg, run: RunFolder, resume: bool, callbacks: list, progress: bool) -> dict:
    started = time.perf_counter()
    cfg = _prepare_folder(cfg, run, resume)
    if cfg.strategy == "fsdp" and not torch.cuda.is_available():
        raise ConfigError(FSDP_NEEDS_GPU)
    engines.candidates(cfg.feature_runtime, cfg.feature_precision, "--feature-")  # runs here?
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = read_data(cfg.csv, DataOptions.of(cfg))
    if progress and is_rank_zero():
        print(data.chosen(), file=sys.stderr)
    require_labelled(data, "training")
    labels = run.load_labels() if resume else label_map(data, cfg.labels)
    cfg = cfg.update(**data.settings())
    model = model_from_config(cfg, num_labels=len(labels))
    image_dir = _inputs(data, model)
    records = RunRecords(cfg, run, data, image_dir, labels, model.image is not None, resume,
                         progress)
    if is_rank_zero():  # a bad image stops the run before Lightning starts the other ranks
        records.screened()
    data = CaptagDataModule(cfg, model, records, labels, image_dir, FeatureCache(cfg.cache_dir),
                            progress=progress)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # same run, warm cache or cold
    deadline = fit_deadline(cfg, started)
    module = CaptagModule(model, cfg.lr, cfg.head_lr, cfg.weight_decay, cfg.at_least_one,
                          cfg.schedule, cfg.warmup,
                          make_loss(cfg.loss, cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip),
                          cfg.ema, deadline)
    trainer = _trainer(cfg, run, callbacks, progress, cfg.val_fraction > 0, deadline)
    trainer.fit_loop.max_epochs = planned_epochs(cfg, len(records.records), trainer.world_size)
    fit_started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr), stopped_by_signal(trainer, run):
        trainer.fit(module, datamodule=data,
                    ckpt_path=str(run.checkpoints / "last.ckpt") if resume else None)
    fit_seconds = time.perf_counter() - fit_started - data.seconds
    if not trainer.is_global_zero:
        return {}
    return _finish(cfg, run, module, trainer, data, labels,
                   {"features_seconds": round(fit_started - started + data.seconds, 2),
                    "fit_seconds": round(fit_seconds, 2), "started": started})


def _inputs(data: Data, model) -> Path:
    """The image folder (the current folder for a model without images), once the data has
    the inputs that the model reads."""
    if model.text is not None and data.text_column is None:
        raise ConfigError(f"{data.path} has no text column, and this model reads text: pass "
                          "--text-column, or train an image-only model (--model image-only).")
    return data.image_dir() if model.image is not None else Path(".")


@contextlib.contextmanager
def stopped_by_signal(trainer: L.Trainer, run: RunFolder):
    """Turn Lightning's stop on SIGTERM (after the step it came in) and on Ctrl-C (at once)
    into `TrainingInterrupted`, which says what last.ckpt holds: the last whole epoch, from
    which --resume gives the model an uninterrupted run gives. The Ctrl-C handler that
    Lightning turns off while it stops is put back."""
    sigint = signal.getsignal(signal.SIGINT)
    try:
        yield
    except SIGTERMException:
        raise _interrupted(trainer, run, "SIGTERM", signal.SIGTERM) from None
    except SystemExit as stop:
        if not isinstance(stop.__context__, KeyboardInterrupt):
            raise
        raise _interrupted(trainer, run, "Ctrl-C", signal.SIGINT) from None
    finally:  # signal.signal works only in the main thread; None: a handler not set from Python
        if sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)


def _interrupted(trainer: L.Trainer, run: RunFolder, name: str, number: int) -> TrainingInterrupted:
    done = trainer.current_epoch
    if not run.resumable():
        return TrainingInterrupted(
            f"Training stopped by {name} before its first epoch ended; nothing to resume. Run "
            "the same command again (what the feature cache finished is kept).", 128 + number)
    return TrainingInterrupted(
        f"Training stopped by {name} after {done} of {trainer.max_epochs} epochs; "
        f"{run.checkpoints / 'last.ckpt'} holds epoch {done}. Continue with: "
        f"captag train --resume {run.path}", 128 + number)


def _finish(cfg, run: RunFolder, module: CaptagModule, trainer, data, labels, times: dict) -> dict:
    best_path = trainer.checkpoint_callback.best_model_path or str(run.checkpoints / "last.ckpt")
    if not Path(best_path).exists():
        raise RunFolderError(f"Training stopped before its first epoch ended (time_limit "
                             f"{cfg.time_limit}): give it more time, or fewer rows.")
    checkpoint = torch.load(best_path, map_location="cpu", weights_only=False)
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    if checkpoint.get("ema_chosen"):
        module.use_ema_weights()
    data.setup("validate")  # ddp_spawn prepared the data in the spawned processes, not here
    device = trainer.strategy.root_device  # scored where it trained: a GPU run stays on its GPU
    scores = _validation_scores(cfg, data, module.to(device), labels) if data.records["val"] else {}
    module.cpu()
    threshold = scores.get("threshold", 0.5)
    save_thresholds(run.thresholds, threshold, scores.get("tuned_f1"),
                    scores.get("val_at_0.5", {}).get("f1_samples"),
                    source="validation" if scores else None)
    run.save_model(module.model)
    size_mb = parameter_mb(module.model)
    summary = {
        "model": cfg.model, "best_checkpoint": Path(best_path).name,
        "best_epoch": int(checkpoint["epoch"]) + 1,
        "epochs_planned": trainer.max_epochs, "epochs_run": trainer.current_epoch,
        "stopped_early": trainer.current_epoch < trainer.max_epochs,
        "ema_chosen": bool(checkpoint.get("ema_chosen", False)), "precision": trainer.precision,
        "threshold": threshold,
        "val": scores.get("val", {}),
        "val_at_0.5": scores.get("val_at_0.5", {}),
        "val_per_class": scores.get("val_per_class", []),
        **weights_summary(module.model),
        "parameters": parameter_count(module.model), "parameter_mb_fp32": round(size_mb, 2),
        "model_file_mb": round(file_mb(run.model), 2),
        "checkpoint_mb": round(file_mb(best_path), 2),
        **{k: v for k, v in times.items() if k != "started"},
        "train_seconds": round(time.perf_counter() - times["started"], 2),
    }
    summary["within_budget"] = check_budget(summary["model_file_mb"])
    run.write_json(run.summary, summary)
    return summary


def _validation_scores(cfg, data, module: CaptagModule, labels) -> dict:
    """Scores of the loaded model on the validation split, with the tuned threshold."""
    module.eval()
    probs = probabilities(lambda batch: module(move_data_to_device(batch, module.device)),
                          data.val_dataloader())
    targets = data.targets["val"]
    threshold, tuned_f1 = tune_threshold(targets, probs, at_least_one=cfg.at_least_one)
    return {"threshold": threshold, "tuned_f1": tuned_f1,
            "val": compute_metrics(targets, probs, threshold, cfg.at_least_one),
            "val_at_0.5": compute_metrics(targets, probs, 0.5, cfg.at_least_one),
            "val_per_class": per_class_report(targets, probs, threshold, labels.ids, labels.names)}
