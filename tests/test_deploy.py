"""`captag export` and the torch-free runtime of an exported folder."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from captag.cli import main
from captag.data import read_records
from captag.deploy import load_predictor
from captag.deploy.export import export_run, shrink_vocabulary
from captag.deploy.runtime import ExportedPredictor
from captag.errors import BadImagesError, InputError, OutputError, RunFolderError
from captag.inference.predictor import Predictor
from captag.runs import RunFolder
from conftest import DATA, MINI, small_csv

SRC = Path(__file__).resolve().parents[1] / "src"
BLOCKED = ("torch", "torchvision", "timm", "transformers", "lightning")
# A fresh interpreter in which the heavy libraries cannot be imported; then the command line.
NO_TORCH = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked in this test")
sys.meta_path.insert(0, Block())
from captag.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def exported(frozen_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "fp32"
    export_run(frozen_run, out)
    return out


@pytest.fixture(scope="module")
def train_rows(frozen_run):
    """Rows of the run's training split: every token of their captions is kept."""
    train_ids = set(RunFolder(frozen_run).load_split()[0])
    return [r for r in read_records(MINI)[:60] if r.image_id in train_ids]


def test_the_folder_holds_graphs_tokenizer_and_model_yaml(exported, frozen_run):
    names = {p.name for p in exported.iterdir()}
    assert {"image.onnx", "text.onnx", "head.onnx", "tokenizer.json", "token_map.npy",
            "labels.json", "thresholds.json", "split.json", "model.yaml"} <= names
    spec = yaml.safe_load((exported / "model.yaml").read_text())
    assert spec["format"] == "captag-export" and spec["format_version"] == 1
    pre = spec["preprocessing"]
    assert pre["image_size"] == 224 and pre["resize_filter"] == "bilinear"
    assert len(pre["mean"]) == 3 and pre["max_length"] == 64 and pre["at_least_one"] is True
    assert spec["inputs"]["text"] == ["input_ids", "attention_mask"]
    assert spec["sizes"]["parameters"] > 0 and 0 < spec["sizes"]["model_mb"] < spec["sizes"]["folder_mb"]
    prov = spec["provenance"]
    assert prov["run"] == str(frozen_run.resolve()) and prov["int8"] is False
    assert prov["val_f1_samples"] is not None and prov["config"]["model"] == "fusion"


def test_fp32_export_gives_the_run_folders_probabilities(exported, frozen_run, train_rows):
    run, export = Predictor.load(frozen_run), ExportedPredictor.load(exported)
    expected = run.predict_probs(train_rows, DATA / "data", progress=False)
    got = export.predict_probs(train_rows, DATA / "data", batch_size=8, progress=False)
    assert np.abs(got - expected).max() < 1e-4
    assert export.threshold == run.threshold and export.labels == run.labels


def test_predict_takes_paths_bytes_and_pil_like_the_run_folder(exported, frozen_run, train_rows):
    export, row = load_predictor(exported), train_rows[0]
    assert isinstance(export, ExportedPredictor)
    path = DATA / "data" / row.image_id
    results = [export.predict(source, row.caption)
               for source in (path, path.read_bytes(), Image.open(path))]
    reference = Predictor.load(frozen_run).predict(path, row.caption)
    for result in results:
        assert result["labels"] == reference["labels"]
        assert result["threshold"] == reference["threshold"]
        for name, p in reference["probabilities"].items():
            assert result["probabilities"][name] == pytest.approx(p, abs=1e-4)
    batch = export.predict([path] * 3, [row.caption] * 3, batch_size=2)
    assert len(batch) == 3 and batch[2]["labels"] == reference["labels"]


def test_bad_input_to_predict_is_named(exported, train_rows):
    export, path = load_predictor(exported), DATA / "data" / train_rows[0].image_id
    with pytest.raises(InputError, match="2 images but 1 captions"):
        export.predict([path, path], ["a"])
    with pytest.raises(InputError, match="empty"):
        export.predict(path, " ")
    with pytest.raises(BadImagesError, match="image 0"):
        export.predict(b"not an image", "a caption")


def test_info_has_the_same_keys_for_both_folders(exported, frozen_run):
    export, run = load_predictor(exported).info(), load_predictor(frozen_run).info()
    assert set(run) <= set(export)
    assert export["labels"] == run["labels"] and len(export["labels"]) == 18
    assert export["thresholds"] == run["thresholds"]
    assert set(export["sizes"]) >= {"model_mb", "parameters", "parameter_mb_fp32"}
    json.dumps(export)


def test_vocabulary_keeps_training_tokens_and_maps_others_to_unk(frozen_run, exported, train_rows):
    model = RunFolder(frozen_run).load_model()
    tokenizer, old = model.text.tokenizer, model.text.model.get_input_embeddings().weight.detach().clone()
    token_map = shrink_vocabulary(model, [r.caption for r in train_rows])
    new = model.text.model.get_input_embeddings().weight.detach()
    unk = token_map[tokenizer.unk_token_id]
    ids = tokenizer(train_rows[0].caption)["input_ids"]
    assert all(token_map[i] != unk for i in ids)
    assert all(np.array_equal(new[token_map[i]].numpy(), old[i].numpy()) for i in ids)
    kept = np.flatnonzero(token_map != unk)
    assert np.all(np.diff(token_map[kept]) > 0) and len(new) == len(kept) + 1
    assert all(token_map[i] != unk or i == tokenizer.unk_token_id
               for i in tokenizer.all_special_ids)
    unseen = tokenizer.convert_tokens_to_ids("##zzz")
    assert token_map[unseen] == unk
    saved = np.load(exported / "token_map.npy")
    assert saved[tokenizer.unk_token_id] == saved[unseen]


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_evaluate_and_predict_an_export_without_torch(exported, frozen_run, tmp_path, capsys):
    rows = small_csv(tmp_path / "rows.csv", 60)
    (tmp_path / "data").symlink_to(DATA / "data")
    done = run_cli("evaluate", exported, "--csv", rows, "--split", "train", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    export = json.loads(done.stdout)
    assert main(["-q", "evaluate", str(frozen_run), "--csv", str(rows), "--split", "train",
                 "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert export["engine"] == "onnxruntime" and export["n_samples"] == run["n_samples"] > 30
    assert export["f1_samples"] == pytest.approx(run["f1_samples"], abs=1e-9)
    out = tmp_path / "sub.csv"
    done = run_cli("-q", "predict", exported, "--csv", rows, "--output", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list(csv.reader(out.open()))) == 61
    done = run_cli("evaluate", exported, "--csv", rows, "--split", "val")
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_runtime_imports_no_torch():
    code = ("import sys, captag.deploy.runtime, captag.deploy, captag.inference.evaluate; "
            f"print([m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}])")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_bad_export_arguments_are_named(frozen_run, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "not a finished captag run folder" in err and "model.safetensors" in err
    full = tmp_path / "full"
    full.mkdir()
    (full / "a").write_text("x")
    with pytest.raises(OutputError, match=str(full)):
        export_run(frozen_run, full)
    assert main(["export", str(frozen_run), "--out", str(full)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    with pytest.raises(RunFolderError, match="model.yaml missing"):
        ExportedPredictor.load(tmp_path)


def test_an_export_cannot_be_evaluated_at_another_image_size(exported, capsys):
    assert main(["evaluate", str(exported), "--csv", str(MINI), "--image-size", "288"]) == 2
    assert "--image-size is for run folders" in capsys.readouterr().err


def test_an_incomplete_export_is_named(exported, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    (copy / "text.onnx").unlink()
    with pytest.raises(RunFolderError, match="text.onnx missing"):
        load_predictor(copy)


@pytest.mark.slow
def test_int8_export_is_small_and_close(frozen_run, tmp_path):
    out = tmp_path / "int8"
    spec = export_run(frozen_run, out, int8="all")
    assert spec["provenance"]["int8"] is True
    assert set(spec["provenance"]["int8_speed"]["kept"].values()) == {"int8"}
    assert sum(p.stat().st_size for p in out.iterdir()) / 2**20 <= 25
    run, export = Predictor.load(frozen_run), load_predictor(out)
    val = set(run.load_split()[1])
    rows = [r for r in read_records(MINI) if r.image_id in val][:100]
    targets = run.labels.encode_many([r.labels for r in rows])
    from captag.evaluation.metrics import compute_metrics
    f1 = [compute_metrics(targets, p.predict_probs(rows, DATA / "data", progress=False),
                          p.threshold)["f1_samples"] for p in (run, export)]
    assert abs(f1[0] - f1[1]) < 0.05


def _quantized(path: Path) -> bool:
    import onnx
    return any(node.op_type in ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear")
               for node in onnx.load(str(path)).graph.node)


def test_int8_auto_keeps_a_graph_fp32_where_that_runs_faster(frozen_run, tmp_path, monkeypatch):
    from captag.deploy import graph_speed
    measured = graph_speed.graph_ms

    def image_int8_slower(int8_path, fp32_path, feeds):
        ms = measured(int8_path, fp32_path, feeds)
        ms["onnxruntime int8"] = 1e6 if int8_path.name == "image.onnx" else 0.0
        return ms
    monkeypatch.setattr(graph_speed, "graph_ms", image_int8_slower)
    spec = export_run(frozen_run, tmp_path / "auto", int8=True, image_quant="dynamic")
    speed = spec["provenance"]["int8_speed"]
    assert speed["policy"] == "auto"
    assert speed["kept"] == {"image": "fp32", "text": "int8", "head": "int8"}
    assert {"onnxruntime int8", "onnxruntime fp32"} <= set(speed["ms_per_batch"]["image"])
    assert [_quantized(tmp_path / "auto" / f"{part}.onnx") for part in speed["kept"]] == [
        False, True, True]
    every = export_run(frozen_run, tmp_path / "all", int8="all", image_quant="dynamic")
    assert set(every["provenance"]["int8_speed"]["kept"].values()) == {"int8"}
    assert _quantized(tmp_path / "all" / "image.onnx")


def test_export_int8_takes_auto_or_all():
    from captag.cli import build_parser
    parse = lambda *extra: build_parser().parse_args(["export", "run", "--out", "o", *extra]).int8
    assert (parse(), parse("--int8"), parse("--int8", "all")) == (None, "auto", "all")
