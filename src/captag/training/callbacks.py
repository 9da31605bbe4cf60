"""Lightning callbacks of a run: the per-epoch metrics.csv, RNG state kept for exact resume, the
epoch planner of a time budget, and (for tests) a log of the training rows each process saw and
a crash after a given epoch."""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import signal
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

COLUMNS = ["epoch", "train_loss", "val_loss", "val_f1_samples", "val_f1_micro", "val_f1_macro",
           "val_map", "seconds"]


SAFETY = 1.1  # epochs are planned as if 10% slower than the first, so the last one fits


class TimePlanner(L.Callback):
    """Keeps a run to its time budget: training stops at the `deadline` (a time.perf_counter()
    value), and with `plan` the first epoch is the speed probe that sets how many whole epochs,
    validation included, fit before it (at most the run's max_epochs), with the learning rate
    decaying over them. Until then the time-driven decay keeps the schedule on the budget."""

    def __init__(self, deadline: float, plan: bool):
        self.deadline, self.plan = deadline, plan
        self._started = time.perf_counter()
        self.planned: int | None = None

    def on_train_start(self, trainer, module) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._stop_at_deadline(trainer)

    def _stop_at_deadline(self, trainer) -> None:
        """Rank 0's clock decides for every process, as Lightning's Timer does."""
        if trainer.strategy.broadcast(time.perf_counter() >= self.deadline):
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, module) -> None:
        self._stop_at_deadline(trainer)
        if not self.plan or self.planned is not None:
            return
        now = time.perf_counter()
        done = trainer.current_epoch + 1
        epoch_seconds = (now - self._started) / done
        more = max(int((self.deadline - now) // (SAFETY * epoch_seconds)), 0)
        self.planned = trainer.strategy.broadcast(min(done + more, trainer.max_epochs))
        trainer.fit_loop.max_epochs = self.planned
        module.plan_epochs(self.planned, trainer.num_training_batches // trainer.accumulate_grad_batches)
        log.info("time budget: %d epochs planned (%.0f s an epoch, %.0f s left)",
                 self.planned, epoch_seconds, self.deadline - now)


class MetricsCSV(L.Callback):
    """Writes one row per epoch to metrics.csv, before the epoch's checkpoint is saved (after
    validation, or at the epoch's end without one); its rows travel in checkpoints for resume."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer, module) -> None:
        self._started = time.perf_counter()

    def on_validation_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, module)

    def on_train_epoch_end(self, trainer, module) -> None:
        if not self.rows or self.rows[-1]["epoch"] != trainer.current_epoch + 1:
            self._record(trainer, module)  # no validation this epoch

    def _record(self, trainer, module) -> None:
        metrics = module.val_metrics  # empty without a validation split
        row = {"epoch": trainer.current_epoch + 1, "train_loss": module.epoch_train_loss,
               "val_loss": float(trainer.callback_metrics.get("val_loss", float("nan")))
               if metrics else float("nan"),
               **{k: metrics.get(k, float("nan")) for k in COLUMNS[3:7]},
               "seconds": round(time.perf_counter() - self._started, 2)}
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state.get("rows", []))
        self.write()


class RngState(L.Callback):
    """Saves every process's RNG states in each checkpoint and puts each back in its own process
    when a run resumes (under DDP the ranks' states differ; a rank the checkpoint lacks, after a
    change of world size, gets rank 0's)."""

    def state_dict(self) -> dict:
        if not _distributed():
            return {"ranks": [_rng_state()]}
        states: list = [None] * dist.get_world_size()
        dist.all_gather_object(states, _rng_state())  # every rank dumps the checkpoint
        return {"ranks": states}

    def load_state_dict(self, state: dict) -> None:
        states = state.get("ranks", [state])
        rank = dist.get_rank() if _distributed() else 0
        _set_rng_state(states[rank] if rank < len(states) else states[0])


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "internal": torch.tensor(internal), "gauss": gauss}}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss"]))


SHARD_LOG, KILL_AFTER = "CAPTAG_LOG_SHARDS", "CAPTAG_KILL_AFTER_EPOCH"


def env_hooks() -> list[L.Callback]:
    """The test hooks that $CAPTAG_LOG_SHARDS and $CAPTAG_KILL_AFTER_EPOCH turn on; [] unset."""
    hooks: list[L.Callback] = [ShardLog(os.environ[SHARD_LOG])] if os.environ.get(SHARD_LOG) else []
    if os.environ.get(KILL_AFTER):
        hooks.append(KillAfter(int(os.environ[KILL_AFTER])))
    return hooks


class KillAfter(L.Callback):
    """Rank 0 SIGKILLs its whole process group (every local rank) once epoch N is checkpointed,
    at the start of the next epoch: a crash for a test of --resume under DDP."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch == self.epoch and trainer.is_global_zero:
            os.killpg(os.getpgrp(), signal.SIGKILL)


class ShardLog(L.Callback):
    """Writes FOLDER/rank<R>.json: {epoch: [image IDs this process trained on]}, so a test can
    check that the processes of a DDP run saw disjoint shards that cover the training split."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.epochs: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        rows = self.epochs.setdefault(trainer.current_epoch + 1, [])
        rows.extend(torch.as_tensor(batch["index"]).tolist())

    def on_train_end(self, trainer, module) -> None:
        records = trainer.datamodule.records["train"]
        ids = {epoch: [records[i].image_id for i in rows] for epoch, rows in self.epochs.items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(ids))
