"""The run-folder contract: every bad file is named before any work, the lock, the reuse rule,
strict JSON, and the ONNX export (atomic, quiet, read-only folders)."""

import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from captag.config import cache_root
from captag.errors import OutputError, RunFolderError
from captag.files import dumps
from captag.inference import evaluate
from captag.inference.evaluate import evaluate_run, predict_run
from captag.inference.predictor import Predictor
from captag.models import engines, onnx
from captag.runs import RunFolder
from conftest import DATA, MINI, small_csv


def _strict(text: str):
    """JSON as a strict parser (JavaScript's JSON.parse) reads it: no NaN or Infinity."""
    def refuse(name):
        raise ValueError(f"bare {name} in JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the data is read or the model is run."""
    def reached(*args, **kwargs):
        raise AssertionError("work started before the run folder was checked")
    monkeypatch.setattr(evaluate, "read_data", reached)
    monkeypatch.setattr(Predictor, "predict_probs", reached)


# --- each bad file is named, before any data is read or the model run ------------------------

def _write(name, text):
    return lambda run: (run / name).write_text(text)


def _remove(name):
    def remove(run):
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return remove


def _truncate(run):
    path = run / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _set_weights(change):
    def edit(run):
        state = load_file(run / "model.safetensors")
        change(state)
        save_file(state, run / "model.safetensors")
    return edit


def _nan(state):
    state[sorted(state)[0]].view(-1)[0] = float("nan")


def _inf(state):
    state[sorted(state)[-1]].view(-1)[-1] = float("inf")


# Each spoils a copy of a good run folder; the error must match the pattern (it names the file).
BAD_FOLDERS = {
    "config garbage": (_write("config.yaml", "epochs: [3\n"), "config.yaml"),
    "config not a mapping": (_write("config.yaml", "- epochs\n- 3\n"), "config.yaml"),
    "config bad setting": (_write("config.yaml", "epochs: -1\n"), "config.yaml"),
    "config unknown setting": (_write("config.yaml", "epochz: 3\n"), "config.yaml"),
    "config unknown model": (_write("config.yaml", "model: nonsense\n"), "config.yaml: model"),
    "config missing": (_remove("config.yaml"), "config.yaml"),
    "labels garbage": (_write("labels.json", "not json"), "labels.json"),
    "labels missing": (_remove("labels.json"), "labels.json"),
    "thresholds list": (_write("thresholds.json", "[0.5]"), "thresholds.json"),
    "thresholds garbage": (_write("thresholds.json", "{0.5"), "thresholds.json"),
    "threshold above 1": (_write("thresholds.json", '{"threshold": 1.5, "tuned_on": "validation"}'),
                          "thresholds.json"),
    "threshold 0": (_write("thresholds.json", '{"threshold": 0, "tuned_on": "validation"}'),
                    "thresholds.json"),
    "threshold a string": (_write("thresholds.json", '{"threshold": "0.3", "tuned_on": "validation"}'),
                           "thresholds.json"),
    "threshold NaN": (_write("thresholds.json", '{"threshold": NaN, "tuned_on": "validation"}'),
                      "thresholds.json"),
    "thresholds missing": (_remove("thresholds.json"), "thresholds.json"),
    "model truncated": (_truncate, "model.safetensors"),
    "model corrupt": (_write("model.safetensors", "not a safetensors file" * 100), "model.safetensors"),
    "model empty": (_write("model.safetensors", ""), "model.safetensors"),
    "model missing": (_remove("model.safetensors"), "model.safetensors"),
    "weights NaN": (_set_weights(_nan), "model.safetensors: tensor '.+' holds NaN"),
    "weights inf": (_set_weights(_inf), "model.safetensors: tensor '.+' holds NaN or inf"),
    "weights of another model": (_set_weights(lambda s: s.pop(sorted(s)[-1])),
                                 "model.safetensors does not fit"),
    "text encoder missing": (_remove("text_encoder"), "text_encoder"),
    "text encoder config missing": (_remove("text_encoder/config.json"), "text_encoder"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_run_folder_is_named_before_any_work(run_copy, tmp_path, no_work, case):
    spoil, named = BAD_FOLDERS[case]
    spoil(run_copy)
    with pytest.raises(RunFolderError, match=named):
        evaluate_run(run_copy, MINI, progress=False)
    with pytest.raises(RunFolderError, match=named):
        predict_run(run_copy, MINI, tmp_path / "out" / "submission.csv", progress=False)


def test_missing_run_folder(tmp_path, no_work):
    with pytest.raises(RunFolderError, match="does not exist"):
        evaluate_run(tmp_path / "nope", MINI)
    with pytest.raises(RunFolderError, match="not a finished captag run folder"):
        evaluate_run(tmp_path, MINI)


def test_check_passes_on_a_good_folder_and_reads_the_threshold(run_copy):
    run = RunFolder(run_copy)
    run.check()
    saved = json.loads(run.thresholds.read_text())["threshold"]
    assert run.load_threshold() == pytest.approx(saved)
    run.thresholds.write_text('{"threshold": null, "default": 0.5, "tuned_on": null}')
    assert run.load_threshold() == 0.5


def test_evaluate_split_val_without_validation_split(run_copy, no_work):
    split = json.loads((run_copy / "split.json").read_text())
    split["train"] += split["val"]
    split["val"] = []
    (run_copy / "split.json").write_text(json.dumps(split))
    with pytest.raises(RunFolderError, match="no validation split"):
        evaluate_run(run_copy, MINI, split="val", progress=False)


# --- predict's output path is checked before any work ------------------------------------

@pytest.fixture
def no_predictor(monkeypatch):
    def reached(*args, **kwargs):
        raise AssertionError("the run folder was loaded before the output was checked")
    monkeypatch.setattr(evaluate, "_predictor", reached)


def test_predict_output_is_a_folder(frozen_run, tmp_path, no_predictor):
    with pytest.raises(OutputError, match="is a folder"):
        predict_run(frozen_run, DATA / "test_mini.csv", tmp_path)


def test_predict_output_folder_cannot_be_created(frozen_run, tmp_path, no_predictor):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    with pytest.raises(OutputError, match="cannot be created"):
        predict_run(frozen_run, DATA / "test_mini.csv", tmp_path / "file.txt" / "sub" / "out.csv")


# --- the lock and the reuse rule ------------------------------------------------------------

def test_lock_refuses_a_second_holder(tmp_path):
    run = RunFolder(tmp_path / "run")
    with run.lock():
        assert run.path.is_dir()
        with pytest.raises(RunFolderError, match="another captag process is using"):
            with RunFolder(tmp_path / "run").lock():
                pass
    with RunFolder(tmp_path / "run").lock():  # free again once released
        pass


def test_lock_refuses_another_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from captag.runs import RunFolder\n"
         "with RunFolder(sys.argv[1]).lock():\n print('held', flush=True); time.sleep(60)",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"another captag process is using {tmp_path}"):
            with RunFolder(tmp_path).lock():
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_failed_train_leaves_a_reusable_folder(tmp_path):
    run = RunFolder(tmp_path / "run")
    with run.lock():
        for path in (run.config, run.labels, run.split, run.bad_images, run.metrics):
            path.write_text("{}")
        (run.logs / "version").mkdir(parents=True)
        (run.path / "notes.txt").write_text("the user's own file")
        assert not run.holds_run() and not run.resumable()
        run.clear()
    assert sorted(p.name for p in run.path.iterdir()) == [".lock", "notes.txt"]


@pytest.mark.parametrize("done", ["checkpoints/last.ckpt", "summary.json"])
def test_a_folder_with_a_checkpoint_or_summary_holds_a_run(tmp_path, done):
    run = RunFolder(tmp_path)
    (tmp_path / done).parent.mkdir(exist_ok=True)
    (tmp_path / done).write_text("{}")
    assert run.holds_run()
    assert run.resumable() == done.startswith("checkpoints")
    with pytest.raises(RunFolderError, match="holds a run"):
        run.clear()
    assert (tmp_path / done).exists()


# --- strict JSON ------------------------------------------------------------------------------

def test_summary_json_is_strict_with_a_class_without_positives(frozen_run, tmp_path):
    _strict((frozen_run / "summary.json").read_text())
    run = RunFolder(tmp_path)
    summary = {"val": {"map": float("nan")},
               "val_per_class": [{"label": 19, "support": 0, "ap": float("nan")}]}
    run.write_json(run.summary, summary)
    assert _strict(run.summary.read_text()) == {
        "val": {"map": None}, "val_per_class": [{"label": 19, "support": 0, "ap": None}]}


def test_evaluate_results_are_strict_json(run_copy, tmp_path):
    csv = small_csv(tmp_path / "small.csv", 12)
    result = evaluate_run(run_copy, csv, images=DATA / "data", progress=False)
    absent = [row for row in result["per_class"] if row["support"] == 0]
    assert absent and all(row["ap"] is None for row in absent)
    assert _strict(dumps(result)) == result


# --- ONNX export: shared helper, atomic, quiet, read-only run folders ---------------------

def test_export_helper_is_atomic_and_cleans_up(tmp_path):
    path = tmp_path / "graphs" / "linear.onnx"
    linear = torch.nn.Linear(4, 2).eval()
    assert onnx.exported(linear, (torch.zeros(2, 4),), path, ["x"]) == path
    out = engines.compile_graph(path, engines.FP32, 1)({"x": torch.ones(5, 4).numpy()})
    assert out.shape == (5, 2)
    assert [p.name for p in path.parent.iterdir()] == ["linear.onnx"]

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("cannot trace")
    with pytest.raises(RuntimeError, match="cannot trace"):
        onnx.export(Broken(), (torch.zeros(2, 4),), tmp_path / "broken.onnx", ["x"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graphs"]


def test_first_predictions_export_quietly(run_copy, tmp_path):
    (run_copy / "model.onnx").unlink(missing_ok=True)
    records = evaluate.read_data(small_csv(tmp_path / "small.csv", 4)).records
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = Predictor(run_copy)
        probs = predictor.predict_probs(records, DATA / "data", num_workers=0, progress=False)
    assert probs.shape == (4, 18) and predictor.engine == "onnxruntime"
    assert (run_copy / "model.onnx").is_file()
    assert [str(w.message)[:80] for w in caught] == []


def test_concurrent_first_evaluate_both_succeed(run_copy, tmp_path):
    (run_copy / "model.onnx").unlink(missing_ok=True)
    csv = small_csv(tmp_path / "small.csv", 16)
    command = [sys.executable, "-m", "captag.cli", "-q", "evaluate", str(run_copy), "--csv",
               str(csv), "--images", str(DATA / "data"), "--json"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    for run, (out, err) in zip(runs, results):
        assert run.returncode == 0, err
        assert _strict(out)["n_samples"] == 16
    assert (run_copy / "model.onnx").is_file()
    assert not [p.name for p in run_copy.iterdir() if p.name.endswith(".tmp")]


def test_read_only_run_folder_evaluates_through_the_cache(run_copy, tmp_path, monkeypatch):
    """The run folder is made read-only with chmod. Tests here run as root, whom chmod does
    not stop, so then the writability probe (`RunFolder.is_writable`) is patched to say what
    a normal user would get: this tests where the export goes, not the permission itself."""
    (run_copy / "model.onnx").unlink(missing_ok=True)
    monkeypatch.setenv("CAPTAG_CACHE", str(tmp_path / "cache"))
    if os.geteuid() == 0:
        monkeypatch.setattr(RunFolder, "is_writable", lambda self: False)
    csv = small_csv(tmp_path / "small.csv", 8)
    run_copy.chmod(0o555)
    try:
        result = evaluate_run(run_copy, csv, images=DATA / "data", progress=False)
    finally:
        run_copy.chmod(0o755)
    assert result["n_samples"] == 8 and result["engine"] == "onnxruntime"
    assert not (run_copy / "model.onnx").exists()
    assert (cache_root() / "onnx" / f"{RunFolder(run_copy).fingerprint()}.onnx").is_file()


def test_a_fresh_model_onnx_in_a_read_only_folder_is_used(run_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTAG_CACHE", str(tmp_path / "cache"))
    Predictor(run_copy).predict_probs([], None, progress=False)  # exports model.onnx
    exported = (run_copy / "model.onnx").stat().st_mtime_ns
    monkeypatch.setattr(RunFolder, "is_writable", lambda self: False)
    csv = small_csv(tmp_path / "small.csv", 4)
    evaluate_run(run_copy, csv, images=DATA / "data", progress=False)
    assert (run_copy / "model.onnx").stat().st_mtime_ns == exported
    assert not (tmp_path / "cache" / "onnx").exists()
