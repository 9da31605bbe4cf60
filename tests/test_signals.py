"""Signals during training: SIGTERM in epoch 2 stops with a message and the checkpoint of epoch
1, from which --resume gives the uninterrupted model; Ctrl-C during the feature pass leaves no
half-written cache entry behind, and the same command then gives the same model."""

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from captag.cli import main
from conftest import MINI, small_csv

# Run `captag` with one test hook; sys.argv[1] names the hook, the rest is the command line.
WITH_A_SIGNAL = """
import os, signal, sys
import lightning as L
import captag.training.cache as cache
import captag.training.features as features
import captag.training.trainer as trainer
from captag.cli import main

hook, argv = sys.argv[1], sys.argv[2:]


class TermInEpochTwo(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 2:
            os.kill(os.getpid(), signal.SIGTERM)


def interrupted_while_computing(iterable, **kwargs):
    for i, item in enumerate(iterable):
        if i == 1:
            os.kill(os.getpid(), signal.SIGINT)
        yield item


def interrupted_while_writing(tmp, path):
    for array in tmp.glob("*.npy"):  # what is on disk when Ctrl-C comes
        os.truncate(array, os.path.getsize(array) // 2)
    os.kill(os.getpid(), signal.SIGINT)


if hook == "sigterm":
    hooks = trainer.env_hooks
    trainer.env_hooks = lambda: [*hooks(), TermInEpochTwo()]
elif hook == "computing":
    features.tqdm = interrupted_while_computing
elif hook == "writing":
    cache.publish = interrupted_while_writing
sys.exit(main(argv))
"""


def with_a_signal(tmp_path: Path, hook: str, argv: list[str]) -> subprocess.CompletedProcess:
    """Run the hooked `captag` as a program in a terminal's foreground runs: with Ctrl-C's
    default action, also when these tests run as a background job (whose shell ignores SIGINT
    for it, and so for its children)."""
    script = tmp_path / "with_a_signal.py"
    script.write_text(WITH_A_SIGNAL)
    return subprocess.run([sys.executable, str(script), hook, *argv], capture_output=True,
                          text=True, timeout=600,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def train_argv(data: Path, out: Path, cache: Path, epochs: int) -> list[str]:
    return ["-q", "train", "--csv", str(data), "--images", str(MINI.parent / "data"), "--out",
            str(out), "--cache-dir", str(cache), "--model", "fusion", "--image-encoder",
            "tf_efficientnet_lite0", "--image-size", "96", "--epochs", str(epochs),
            "--batch-size", "16", "--image-trainable", "1", "--text-trainable", "1",
            "--num-workers", "0"]


def metrics(run: Path) -> list[dict]:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def same_model(a: Path, b: Path) -> bool:
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return left.keys() == right.keys() and all((left[k] == right[k]).all() for k in left)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return small_csv(tmp_path_factory.mktemp("signals") / "small.csv", 160)


@pytest.fixture(scope="module")
def whole(data, tmp_path_factory) -> Path:
    """The uninterrupted run, on a cache of its own."""
    folder = tmp_path_factory.mktemp("whole")
    assert main(train_argv(data, folder / "run", folder / "cache", 3)) == 0
    return folder / "run"


@pytest.mark.slow
def test_sigterm_in_epoch_two_stops_cleanly_and_resumes_to_the_same_model(tmp_path, data, whole):
    run = tmp_path / "run"
    stopped = with_a_signal(tmp_path, "sigterm", train_argv(data, run, tmp_path / "cache", 3))
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    message = stopped.stderr.strip().splitlines()[-1]
    assert "stopped by SIGTERM after 1 of 3 epochs" in message, message
    assert "last.ckpt holds epoch 1" in message and f"--resume {run}" in message, message
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(metrics(run)) == 1 and not (run / "model.safetensors").exists()

    assert main(["-q", "train", "--resume", str(run)]) == 0
    assert metrics(run) == metrics(whole)
    assert same_model(run, whole)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["computing", "writing"])
def test_ctrl_c_in_the_feature_pass_leaves_no_half_written_entry(tmp_path, data, whole, moment):
    run, cache = tmp_path / "run", tmp_path / "cache"
    argv = train_argv(data, run, cache, 3)
    stopped = with_a_signal(tmp_path, moment, argv)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    assert "stopped by Ctrl-C before its first epoch ended" in stopped.stderr, stopped.stderr[-2000:]
    left = sorted(p.name for p in cache.rglob("*") if p.suffix in (".npy", ".tmp"))
    assert left == [], left  # the entry being computed or written was not stored, nor a part of it

    assert main(argv) == 0
    assert metrics(run) == metrics(whole)
    assert same_model(run, whole)
