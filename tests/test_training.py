"""Training on the real mini data: learning, the run folder, resume after kill -9, bad images."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

from captag.cli import main
from captag.data import LabelMap, load_split, read_records
from captag.evaluation.metrics import compute_metrics
from conftest import MINI, frozen_config, small_csv


def person_baseline(run: Path) -> float:
    """Samples-F1 on the run's validation rows of always predicting 'person' alone."""
    _, val_ids = load_split(run / "split.json")
    by_id = {r.image_id: r for r in read_records(MINI)}
    labels = LabelMap.default()
    targets = labels.encode_many([by_id[i].labels for i in val_ids])
    always_person = np.zeros_like(targets)
    always_person[:, labels.ids.index(1)] = 1.0
    return compute_metrics(targets, always_person)["f1_samples"]


def test_frozen_training_beats_always_person(frozen_run):
    summary = json.loads((frozen_run / "summary.json").read_text())
    baseline = person_baseline(frozen_run)
    assert summary["val"]["f1_samples"] > baseline + 0.05, (summary["val"], baseline)


def test_run_folder_is_complete(frozen_run):
    for name in ("config.yaml", "metrics.csv", "labels.json", "split.json", "thresholds.json",
                 "model.safetensors", "summary.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (frozen_run / name).exists(), name
    config = yaml.safe_load((frozen_run / "config.yaml").read_text())
    assert config["image_trainable"] == 0 and config["epochs"] == 8
    rows = list(csv.DictReader((frozen_run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    assert {"train_loss", "val_loss", "val_f1_samples", "val_f1_micro", "val_f1_macro"} <= set(rows[0])
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    split = json.loads((frozen_run / "split.json").read_text())
    assert (len(split["train"]), len(split["val"])) == (800, 200)
    assert json.loads((frozen_run / "labels.json").read_text())["ids"] == list(LabelMap.default().ids)
    thresholds = json.loads((frozen_run / "thresholds.json").read_text())
    assert 0.0 < thresholds["threshold"] < 1.0
    assert thresholds["f1_samples_tuned"] >= thresholds["f1_samples_at_0.5"]


def test_existing_run_folder_is_not_overwritten(frozen_run, capsys):
    code = main(["train", "--csv", str(MINI), "--out", str(frozen_run)])
    assert code == 2 and "--resume" in capsys.readouterr().err


KILL_AFTER_SECOND_EPOCH = """
import os, signal, sys
import lightning as L
from captag.config import RunConfig
from captag.training.trainer import train

class KillAfterSecondEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

train(RunConfig.from_yaml(sys.argv[1]), sys.argv[2], callbacks=[KillAfterSecondEpoch()], progress=False)
"""


def _rows_without_time(run: Path) -> list[dict]:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_resume_after_kill_gives_the_same_result(tmp_path, cache_dir):
    from captag.training.trainer import train
    data = small_csv(tmp_path / "small.csv", 160)
    cfg = frozen_config(cache_dir, csv=str(data), images=str(MINI.parent / "data"),
                        image_trainable=1, text_trainable=1, epochs=4, batch_size=16,
                        image_size=96, dropout=0.3)
    train(cfg, tmp_path / "whole", progress=False)

    cfg.save(tmp_path / "cfg.yaml")
    script = tmp_path / "killed.py"
    script.write_text(KILL_AFTER_SECOND_EPOCH)
    path = [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "cfg.yaml"),
                             str(tmp_path / "resumed")], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len(_rows_without_time(tmp_path / "resumed")) == 2
    assert not (tmp_path / "resumed" / "model.safetensors").exists()

    assert main(["-q", "train", "--resume", str(tmp_path / "resumed")]) == 0
    assert _rows_without_time(tmp_path / "resumed") == _rows_without_time(tmp_path / "whole")
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert all((whole[k] == resumed[k]).all() for k in whole)


def _images_with_faults(tmp_path: Path, rows: int) -> tuple[Path, Path]:
    data = small_csv(tmp_path / "small.csv", rows)
    images = tmp_path / "images"
    images.mkdir()
    for record in read_records(data):
        (images / record.image_id).symlink_to(MINI.parent / "data" / record.image_id)
    records = read_records(data)
    (images / records[3].image_id).unlink()
    truncated = images / records[7].image_id
    payload = truncated.read_bytes()
    truncated.unlink()
    truncated.write_bytes(payload[: len(payload) // 2])
    return data, images


def test_bad_images_stop_training_before_it_starts(tmp_path, capsys):
    data, images = _images_with_faults(tmp_path, 40)
    records = read_records(data)
    code = main(["-q", "train", "--csv", str(data), "--images", str(images), "--out",
                 str(tmp_path / "run"), "--freeze", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{records[3].image_id}: missing" in err and f"{records[7].image_id}: truncated" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_skip_bad_leaves_rows_out_and_lists_them(tmp_path, cache_dir):
    data, images = _images_with_faults(tmp_path, 40)
    records = read_records(data)
    code = main(["-q", "train", "--csv", str(data), "--images", str(images), "--out",
                 str(tmp_path / "run"), "--freeze", "--epochs", "1", "--skip-bad",
                 "--cache-dir", str(cache_dir)])
    assert code == 0
    listed = json.loads((tmp_path / "run" / "bad_images.json").read_text())
    assert [b["image_id"] for b in listed] == sorted([records[3].image_id, records[7].image_id],
                                                      key=lambda s: int(s.split(".")[0]))
    train_ids, val_ids = load_split(tmp_path / "run" / "split.json")
    assert len(train_ids) + len(val_ids) == 38
    assert records[3].image_id not in train_ids + val_ids


def test_whole_encoders_train_from_augmented_pixels(tmp_path, cache_dir):
    from captag.training.trainer import train
    data = small_csv(tmp_path / "small.csv", 40)
    cfg = frozen_config(cache_dir, csv=str(data), images=str(MINI.parent / "data"),
                        image_trainable=-1, text_trainable=-1, epochs=1, batch_size=16,
                        image_size=64)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["val"]["n_samples"] == 8
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["train_loss"]))


def test_cached_features_give_the_same_batches_whole_or_item_by_item():
    import torch
    from captag.data.dataset import CachedFeatures, Collate
    from captag.training.datamodule import Joined

    lengths = torch.tensor([1, 2, 3, 4, 5, 6, 1, 2, 3, 4])
    tensors = {"image_features": torch.randn(10, 4, 2, 2, dtype=torch.float16),
               "text_states": torch.randn(10, 6, 3),
               "attention_mask": (torch.arange(6) < lengths[:, None]).to(torch.uint8)}
    data = Joined(CachedFeatures(tensors, targets=torch.eye(10)[:, :3].numpy()))
    collate = Collate()
    indices = [7, 2, 3]  # 2, 3 and 4 tokens: padding trimmed to 4
    whole = collate(data.__getitems__(indices))
    one_by_one = collate([data[i] for i in indices])
    assert whole.keys() == one_by_one.keys()
    for key, value in whole.items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(one_by_one[key])), key
    assert whole["text_states"].shape == (3, 4, 3) and whole["index"].tolist() == indices


def test_feature_flip_mirrors_cached_maps_of_training_batches_only():
    import torch
    from captag.data.dataset import Collate

    maps = torch.randn(4, 3, 2, 5)
    cached = {"index": list(range(4)), "image_features": maps.clone(), "target": torch.zeros(4, 18)}
    pixels = {"index": list(range(4)), "image": maps.clone(), "target": torch.zeros(4, 18)}
    assert torch.equal(Collate(flip=1.0)(dict(cached))["image_features"], maps.flip(-1))
    assert torch.equal(Collate(flip=0.0)(dict(cached))["image_features"], maps)
    assert torch.equal(Collate(flip=1.0)(dict(pixels))["image"], maps)


def _small_train_args(tmp_path, cache_dir, rows=60, out="run"):
    data = small_csv(tmp_path / "small.csv", rows)
    return ["train", "--csv", str(data), "--images", str(MINI.parent / "data"), "--out",
            str(tmp_path / out), "--freeze", "--epochs", "2", "--cache-dir", str(cache_dir),
            "--num-workers", "0"]


def test_no_validation_split_keeps_the_last_epoch_and_threshold_half(tmp_path, cache_dir, capsys):
    assert main(["-q", *_small_train_args(tmp_path, cache_dir), "--val-fraction", "0"]) == 0
    run = tmp_path / "run"
    assert "no validation split" in capsys.readouterr().out
    train_ids, val_ids = load_split(run / "split.json")
    assert (len(train_ids), len(val_ids)) == (60, 0)
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert thresholds["threshold"] == 0.5 and thresholds["tuned_on"] is None
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val"] == {} and summary["best_epoch"] == 2
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and rows[1]["val_f1_samples"] == "nan"
    assert main(["-q", "predict", str(run), "--csv", str(tmp_path / "small.csv"), "--images",
                 str(MINI.parent / "data"), "--output", str(tmp_path / "p.csv")]) == 0


def test_stdout_holds_the_result_and_stderr_the_progress(tmp_path, cache_dir, capfd):
    assert main(_small_train_args(tmp_path, cache_dir)) == 0
    out, err = capfd.readouterr()
    assert out.splitlines()[0] == f"run folder: {tmp_path / 'run'}" and len(out.splitlines()) == 3
    assert "validation f1_samples" in out and "Epoch" in err
    assert "Tip" not in err and "litlogger" not in err and "INFO" not in err


def test_quiet_and_json_print_only_the_result(tmp_path, cache_dir, capfd):
    assert main(["-q", *_small_train_args(tmp_path, cache_dir, out="a")]) == 0
    out, err = capfd.readouterr()
    assert len(out.splitlines()) == 3 and err == ""
    assert main([*_small_train_args(tmp_path, cache_dir, out="b"), "--json"]) == 0
    out, err = capfd.readouterr()
    summary = json.loads(out)  # strict JSON alone on stdout
    assert summary["val"]["f1_samples"] > 0 and err == ""
    assert main(["evaluate", str(tmp_path / "b"), "--csv", str(tmp_path / "small.csv"),
                 "--images", str(MINI.parent / "data"), "--json"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["n_samples"] == 60 and err == ""


def test_a_failed_run_does_not_block_its_folder(tmp_path, cache_dir):
    import lightning as L
    from captag.training.trainer import train

    class Boom(L.Callback):
        def on_train_batch_start(self, *args):
            raise RuntimeError("boom")
    cfg = frozen_config(cache_dir, csv=str(small_csv(tmp_path / "small.csv", 40)),
                        images=str(MINI.parent / "data"), epochs=1)
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg, tmp_path / "run", callbacks=[Boom()], progress=False)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["val"]["n_samples"] == 8


def test_resume_without_a_checkpoint_says_why(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoints/last.ckpt" in err and f"--out {tmp_path / 'run'}" in err


def test_two_trainings_into_one_folder_cannot_mix(tmp_path, cache_dir):
    args = _small_train_args(tmp_path, cache_dir, rows=120)
    command = [sys.executable, "-m", "captag.cli", "-q", *args, "--epochs", "3"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen([*command, "--seed", "1"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    results = [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "another captag process" in refused or "already holds a run" in refused
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["seed"] == config["seed"]


def test_auto_precision_fits_in_bf16_on_a_cpu_with_bf16_only(monkeypatch):
    from captag.config import RunConfig
    from captag.models import engines
    from captag.training.trainer import fit_precision
    cpu = RunConfig().update(accelerator="cpu")
    monkeypatch.setattr(engines, "has_bf16", lambda info=None: True)
    assert fit_precision(cpu) == "bf16-mixed"
    assert fit_precision(cpu.update(precision="32-true")) == "32-true"
    monkeypatch.setattr(engines, "has_bf16", lambda info=None: False)
    assert fit_precision(cpu) == "32-true"


def test_the_summary_names_the_fit_precision(frozen_run):
    from captag.models import engines
    summary = json.loads((frozen_run / "summary.json").read_text())
    assert summary["precision"] == ("bf16-mixed" if engines.has_bf16() else "32-true")
