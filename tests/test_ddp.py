"""`captag train` under DDP with two CPU processes (gloo), run as a subprocess.

Lightning's DDP launcher starts rank 1 by running the same command line again, so the run is
started from a child process, never from pytest's own. $CAPTAG_LOG_SHARDS makes each rank log
the image IDs it trained on (training.callbacks.ShardLog).
"""

import csv as csv_module
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, small_csv

EPOCHS = 3
BATCH = 8  # per process: 2 x 8 under DDP against 1 x 16 alone
ROOT = Path(__file__).resolve().parents[1]


def captag(*args: str, env: dict | None = None, timeout: int = 170) -> subprocess.CompletedProcess:
    """`python -m captag.cli ARGS` in a child process (with this checkout's src first)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    done = subprocess.run([sys.executable, "-m", "captag.cli", *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def train(csv: Path, out: Path, cache: Path, batch: int, *extra: str, env=None) -> float:
    """Train the head of a frozen-encoder fusion model at 64 px; the seconds it took."""
    started = time.perf_counter()
    captag("-q", "train", "--csv", str(csv), "--images", str(DATA / "data"), "--out", str(out),
           "--freeze", "--image-size", "64", "--epochs", str(EPOCHS), "--batch-size", str(batch),
           "--num-workers", "0", "--accelerator", "cpu", "--cache-dir", str(cache), *extra,
           env=env)
    return time.perf_counter() - started


def files_of(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    csv = small_csv(tmp_path / "small.csv", 405)  # 324 train rows, 81 (odd) validation rows
    cache, shards = tmp_path / "cache", tmp_path / "shards"
    run, alone = tmp_path / "ddp", tmp_path / "alone"
    env = {"CAPTAG_LOG_SHARDS": str(shards), "CAPTAG_CACHE": str(cache)}
    ddp_seconds = train(csv, run, cache, BATCH, "--devices", "2", "--strategy", "ddp", env=env)

    train_ids = json.loads((run / "split.json").read_text())["train"]
    orders = []
    for epoch in map(str, range(1, EPOCHS + 1)):
        seen = [json.loads((shards / f"rank{r}.json").read_text())[epoch] for r in (0, 1)]
        assert len(seen[0]) == len(seen[1]) == len(train_ids) // 2
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == sorted(train_ids)
        orders.append(seen[0])
    assert orders[0] != orders[1]  # a new shuffle each epoch

    assert files_of(run) == [".lock", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                             "config.yaml", "labels.json", "logs/metrics.csv", "metrics.csv",
                             "model.safetensors", "split.json", "summary.json",
                             "text_encoder/config.json", "text_encoder/tokenizer.json",
                             "text_encoder/tokenizer_config.json", "thresholds.json"]
    rows = list(csv_module.DictReader((run / "metrics.csv").open()))
    assert len(rows) == EPOCHS

    summary = json.loads((run / "summary.json").read_text())
    # the epoch's F1, gathered from both ranks (one padded row dropped), is the whole split's
    best = rows[summary["best_epoch"] - 1]
    assert float(best["val_f1_samples"]) == pytest.approx(summary["val_at_0.5"]["f1_samples"],
                                                          abs=1e-6)
    evaluated = json.loads(captag("evaluate", str(run), "--csv", str(csv), "--images",
                                  str(DATA / "data"), "--split", "val", "--json",
                                  env={"CAPTAG_CACHE": str(cache)}).stdout)
    assert evaluated["n_samples"] == summary["val"]["n_samples"] == 81
    assert evaluated["f1_samples"] == pytest.approx(summary["val"]["f1_samples"], abs=1e-3)

    alone_seconds = train(csv, alone, cache, 2 * BATCH, env={"CAPTAG_CACHE": str(cache)})
    single = json.loads((alone / "summary.json").read_text())
    assert single["val"]["f1_samples"] == pytest.approx(summary["val"]["f1_samples"], abs=0.01)
    print(f"\nDDP 2 x {BATCH}: val f1_samples {summary['val']['f1_samples']:.4f} "
          f"in {ddp_seconds:.1f} s; alone 1 x {2 * BATCH}: {single['val']['f1_samples']:.4f} "
          f"in {alone_seconds:.1f} s")
