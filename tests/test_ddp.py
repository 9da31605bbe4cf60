"""`captag train` under DDP with two CPU processes (gloo), run as a subprocess.

Lightning's DDP launcher starts rank 1 by running the same command line again, so the run is
started from a child process, never from pytest's own. $CAPTAG_LOG_SHARDS makes each rank log
the image IDs it trained on (training.callbacks.ShardLog); $CAPTAG_KILL_AFTER_EPOCH makes rank 0
SIGKILL its process group after that epoch (training.callbacks.KillAfter).
"""

import csv as csv_module
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import DATA, small_csv

EPOCHS = 3
BATCH = 8  # per process: 2 x 8 under DDP against 1 x 16 alone
ROOT = Path(__file__).resolve().parents[1]
DDP = ("--accelerator", "cpu", "--devices", "2", "--strategy", "ddp")
RUN_FILES = [".lock", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "config.yaml",
             "labels.json", "logs/metrics.csv", "metrics.csv", "model.safetensors", "split.json",
             "summary.json", "text_encoder/config.json", "text_encoder/tokenizer.json",
             "text_encoder/tokenizer_config.json", "thresholds.json"]


def captag(*args: str, env: dict | None = None, timeout: int = 170,
           returncode: int = 0) -> subprocess.CompletedProcess:
    """`python -m captag.cli ARGS` in a child process (with this checkout's src first), in a
    session of its own so that a kill of its process group spares pytest."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    done = subprocess.run([sys.executable, "-m", "captag.cli", *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout, start_new_session=True)
    assert done.returncode == returncode, done.stderr[-3000:]
    return done


def train(csv: Path, out: Path, cache: Path, batch: int, *extra: str, env=None) -> float:
    """Train the head of a frozen-encoder fusion model at 64 px; the seconds it took."""
    return timed_train(csv, out, cache, "--freeze", "--epochs", str(EPOCHS), "--batch-size",
                       str(batch), "--accelerator", "cpu", *extra, env=env)


def timed_train(csv: Path, out: Path, cache: Path, *args: str, env=None,
                returncode: int = 0) -> float:
    """`captag train` at 64 px without loader workers; the seconds it took."""
    started = time.perf_counter()
    captag("-q", "train", "--csv", str(csv), "--images", str(DATA / "data"), "--out", str(out),
           "--image-size", "64", "--num-workers", "0", "--cache-dir", str(cache), *args,
           env=env, returncode=returncode)
    return time.perf_counter() - started


def files_of(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def check_shards(run: Path, shards: Path, epochs: int) -> list[list[str]]:
    """Each epoch the two ranks trained on disjoint halves of the training split; rank 0's
    image IDs per epoch."""
    train_ids = json.loads((run / "split.json").read_text())["train"]
    orders = []
    for epoch in map(str, range(1, epochs + 1)):
        seen = [json.loads((shards / f"rank{r}.json").read_text())[epoch] for r in (0, 1)]
        assert len(seen[0]) == len(seen[1]) == len(train_ids) // 2
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == sorted(train_ids)
        orders.append(seen[0])
    return orders


def check_evaluate(run: Path, csv: Path, cache: Path) -> dict:
    """The summary's validation scores equal `captag evaluate RUN --split val`'s (ONNX Runtime)."""
    summary = json.loads((run / "summary.json").read_text())
    evaluated = json.loads(captag("evaluate", str(run), "--csv", str(csv), "--images",
                                  str(DATA / "data"), "--split", "val", "--json",
                                  env={"CAPTAG_CACHE": str(cache)}).stdout)
    assert evaluated["n_samples"] == summary["val"]["n_samples"]
    # training scores the float16 feature cache, evaluate the pixels: near-tied scores of these
    # barely trained models may swap (one swap in a class with few positives moves mAP by about
    # 0.01), and at most one row's labels may cross the threshold
    assert evaluated["map"] == pytest.approx(summary["val"]["map"], abs=0.01)
    assert evaluated["f1_samples"] == pytest.approx(summary["val"]["f1_samples"],
                                                    abs=1 / summary["val"]["n_samples"])
    return summary


def metric_rows(run: Path) -> list[dict]:
    rows = list(csv_module.DictReader((run / "metrics.csv").open()))
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    csv = small_csv(tmp_path / "small.csv", 405)  # 324 train rows, 81 (odd) validation rows
    cache, shards = tmp_path / "cache", tmp_path / "shards"
    run, alone = tmp_path / "ddp", tmp_path / "alone"
    env = {"CAPTAG_LOG_SHARDS": str(shards), "CAPTAG_CACHE": str(cache)}
    ddp_seconds = train(csv, run, cache, BATCH, "--devices", "2", "--strategy", "ddp", env=env)

    orders = check_shards(run, shards, EPOCHS)
    assert orders[0] != orders[1]  # a new shuffle each epoch
    assert files_of(run) == RUN_FILES
    rows = metric_rows(run)
    assert len(rows) == EPOCHS

    summary = check_evaluate(run, csv, cache)
    assert summary["val"]["n_samples"] == 81
    # the epoch's F1, gathered from both ranks (one padded row dropped), is the whole split's
    best = rows[summary["best_epoch"] - 1]
    assert float(best["val_f1_samples"]) == pytest.approx(summary["val_at_0.5"]["f1_samples"],
                                                          abs=1e-6)

    alone_seconds = train(csv, alone, cache, 2 * BATCH, env={"CAPTAG_CACHE": str(cache)})
    single = json.loads((alone / "summary.json").read_text())
    # the two runs see their rows in different orders (DistributedSampler against one shuffle),
    # and each of the 81 validation rows moves F1 by up to 1/81: allow about two rows
    assert single["val"]["f1_samples"] == pytest.approx(summary["val"]["f1_samples"], abs=0.025)
    print(f"\nDDP 2 x {BATCH}: val f1_samples {summary['val']['f1_samples']:.4f} "
          f"in {ddp_seconds:.1f} s; alone 1 x {2 * BATCH}: {single['val']['f1_samples']:.4f} "
          f"in {alone_seconds:.1f} s")


@pytest.mark.slow
def test_ddp_resume_after_kill_gives_the_same_result(tmp_path):
    """Cached lower stages, top stages trained: killed after epoch 2 of 4, then resumed."""
    csv = small_csv(tmp_path / "small.csv", 160)  # 128 train rows: 8 steps of 2 x 8 per epoch
    cache, shards = tmp_path / "cache", tmp_path / "shards"
    run, resumed = tmp_path / "whole", tmp_path / "resumed"
    args = ("--image-trainable", "1", "--text-trainable", "1", "--epochs", "4",
            "--batch-size", "8", *DDP)
    env = {"CAPTAG_CACHE": str(cache)}
    seconds = [timed_train(csv, run, cache, *args, env={**env, "CAPTAG_LOG_SHARDS": str(shards)})]
    check_shards(run, shards, 4)
    assert files_of(run) == RUN_FILES
    check_evaluate(run, csv, cache)

    seconds.append(timed_train(csv, resumed, cache, *args, returncode=-9,
                               env={**env, "CAPTAG_KILL_AFTER_EPOCH": "2"}))
    assert len(metric_rows(resumed)) == 2
    assert not (resumed / "model.safetensors").exists()
    started = time.perf_counter()
    captag("-q", "train", "--resume", str(resumed), *DDP, env=env)
    seconds.append(time.perf_counter() - started)

    assert files_of(resumed) == RUN_FILES
    assert metric_rows(resumed) == metric_rows(run)  # each epoch once, losses and F1 equal
    whole, again = load_file(run / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all((whole[k] == again[k]).all() for k in whole)
    print("\nwhole, killed, resumed: " + ", ".join(f"{s:.1f} s" for s in seconds))


@pytest.mark.slow
def test_ddp_finetune_whole_encoders(tmp_path):
    csv = small_csv(tmp_path / "small.csv", 100)  # 80 train rows, 20 validation rows
    cache, shards, run = tmp_path / "cache", tmp_path / "shards", tmp_path / "run"
    seconds = timed_train(csv, run, cache, "--finetune", "--epochs", "1", "--batch-size", "8",
                          *DDP, env={"CAPTAG_CACHE": str(cache), "CAPTAG_LOG_SHARDS": str(shards)})
    check_shards(run, shards, 1)
    assert files_of(run) == RUN_FILES
    assert len(metric_rows(run)) == 1
    summary = check_evaluate(run, csv, cache)
    print(f"\nfinetune 2 x 8: val f1_samples {summary['val']['f1_samples']:.4f} in {seconds:.1f} s")


@pytest.mark.slow
def test_ddp_missing_image_stops_quietly(tmp_path):
    """Rank 0 checks the images before Lightning starts rank 1: no traceback from either."""
    csv = small_csv(tmp_path / "small.csv", 40)
    images = tmp_path / "images"
    images.mkdir()
    ids = [row["ImageID"] for row in csv_module.DictReader(csv.open())]
    for image_id in ids[1:]:
        (images / image_id).symlink_to(DATA / "data" / image_id)
    done = captag("-q", "train", "--csv", str(csv), "--images", str(images), "--out",
                  str(tmp_path / "run"), "--freeze", "--epochs", "1", *DDP, returncode=2)
    assert f"{ids[0]}: missing" in done.stderr and "Traceback" not in done.stderr
    assert files_of(tmp_path / "run") == [".lock"]
