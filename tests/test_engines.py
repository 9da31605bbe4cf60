"""What runs the ONNX graphs: ONNX Runtime fp32, OpenVINO fp32 and bf16, and the choice of the
fastest within tolerance (`captag.models.engines`), through the predictors and the command
line. Each path is forced once; OpenVINO's are skipped where it or bf16 is missing."""

import json
import time

import numpy as np
import pytest
import torch

from captag.cli import main
from captag.deploy.export import export_run
from captag.deploy.runtime import ExportedPredictor
from captag.errors import ConfigError
from captag.inference.predictor import Predictor
from captag.models import engines, onnx
from conftest import DATA, MINI, small_csv

OPENVINO = engines.openvino_version() is not None
needs_openvino = pytest.mark.skipif(not OPENVINO, reason="OpenVINO is not installed "
                                    "(pip install 'captag[openvino]')")
needs_bf16 = pytest.mark.skipif(not (OPENVINO and engines.has_bf16()),
                                reason="needs OpenVINO and a CPU with avx512_bf16 or AMX")


@pytest.fixture
def no_openvino(monkeypatch):
    monkeypatch.setattr(engines, "openvino_version", lambda: None)


@pytest.fixture(scope="module")
def linear_graph(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("graphs") / "linear.onnx"
    onnx.exported(torch.nn.Linear(8, 3).eval(), (torch.zeros(2, 8),), path, ["x"])
    return path


@pytest.fixture(scope="module")
def exported(frozen_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("engines") / "export"
    export_run(frozen_run, out)
    return out


@pytest.fixture(scope="module")
def rows():
    from captag.data import read_records
    return read_records(MINI)[:24]


def test_without_openvino_only_onnxruntime_fp32_runs(no_openvino):
    assert engines.candidates("auto", "auto") == [engines.FP32]
    with pytest.raises(ConfigError, match=r"pip install 'captag\[openvino\]'"):
        engines.candidates("openvino", "auto")


def test_bf16_is_refused_on_a_cpu_without_it(monkeypatch):
    monkeypatch.setattr(engines, "cpu", lambda: {"name": "Old CPU", "flags": ["avx2", "fma"]})
    assert not engines.has_bf16()
    with pytest.raises(ConfigError, match=r"avx512_bf16; this one \(Old CPU\)"):
        engines.candidates("auto", "bf16")
    assert "bf16" not in {way.precision for way in engines.candidates("auto", "auto")}


def test_a_bad_name_or_mix_is_refused():
    with pytest.raises(ConfigError, match="'tensorrt' is not one of auto, onnxruntime, openvino"):
        engines.candidates("tensorrt", "auto")
    with pytest.raises(ConfigError, match="bf16 runs under OpenVINO"):
        engines.candidates("onnxruntime", "bf16")


def test_the_environment_sets_the_default(monkeypatch):
    monkeypatch.setenv("CAPTAG_RUNTIME", "onnxruntime")
    assert engines.candidates() == [engines.FP32]
    monkeypatch.setenv("CAPTAG_RUNTIME", "cuda")
    with pytest.raises(ConfigError, match="--runtime 'cuda'"):
        engines.candidates()


@pytest.mark.parametrize("way", [engines.FP32,
                                 pytest.param(engines.Backend("openvino", "fp32"), marks=needs_openvino),
                                 pytest.param(engines.Backend("openvino", "bf16"), marks=needs_bf16)],
                         ids=str)
def test_each_way_runs_a_graph(linear_graph, way):
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    expected = engines.compile_graph(linear_graph, engines.FP32, 1)({"x": x})
    got = engines.compile_graph(linear_graph, way, 2)({"x": x})
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, expected, atol=0.05 if way.precision == "bf16" else 1e-5)


class FakeWays:
    """Three ways to run any graph: the reference, a fast one that changes the output by
    `error`, and a slow exact one."""

    ways = [engines.FP32, engines.Backend("openvino", "bf16"), engines.Backend("openvino", "fp32")]

    def __init__(self, error: float):
        self.error = error

    def compile(self, path, way, threads, spin=True):
        delay = {"onnxruntime": 0.004, "openvino": 0.0 if way.precision == "bf16" else 0.008}
        shift = self.error if way.precision == "bf16" else 0.0

        def run(feeds):
            time.sleep(delay[way.runtime])
            return feeds["x"] + shift
        return run


@pytest.mark.parametrize("error, expected", [(0.01, "openvino bf16"), (0.2, "onnxruntime fp32")])
def test_auto_keeps_the_fastest_way_within_tolerance(monkeypatch, tmp_path, linear_graph,
                                                     error, expected):
    fake = FakeWays(error)
    monkeypatch.setattr(engines, "candidates", lambda runtime=None, precision=None: fake.ways)
    monkeypatch.setattr(engines, "compile_graph", fake.compile)
    store = tmp_path / "runtimes.json"
    graphs = engines.Runtimes({"a": linear_graph, "b": linear_graph}, store=store)
    assert not graphs.ready and graphs.describe() == {"a": "auto", "b": "auto"}
    x = np.full((2, 3), 0.5, np.float32)
    graphs.choose(lambda runners: runners["b"]({"x": runners["a"]({"x": x})}))
    # two bf16 graphs in a row change the output by 2 * error; one alone by error
    assert expected in graphs.describe().values()
    if error < engines.TOLERANCE / 2:
        assert graphs.describe() == {"a": expected, "b": expected}
    entry = next(iter(json.loads(store.read_text()).values()))
    assert set(entry["ms_per_batch"]["a"]) == {str(way) for way in fake.ways}
    again = engines.Runtimes({"a": linear_graph, "b": linear_graph}, store=store)
    assert again.ready and again.describe() == graphs.describe()


@needs_openvino
def test_auto_on_an_export_chooses_once_and_remembers(exported, rows, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTAG_CACHE", str(tmp_path))
    reference = ExportedPredictor.load(exported, runtime="onnxruntime")
    expected = reference.predict_probs(rows, DATA / "data", progress=False)
    auto = ExportedPredictor.load(exported, runtime="auto", precision="auto")
    assert auto.engine == "auto"
    probs = auto.predict_probs(rows, DATA / "data", progress=False)
    assert np.abs(probs - expected).max() <= engines.TOLERANCE * 2
    chosen = auto.info()["model"]["runtimes"]
    assert set(chosen) == {"image", "text", "head"} and "auto" not in chosen.values()
    assert ExportedPredictor.load(exported, runtime="auto").info()["model"]["runtimes"] == chosen
    assert (tmp_path / "runtimes.json").is_file()


@needs_bf16
def test_an_export_and_a_run_folder_run_under_openvino_bf16(exported, frozen_run, rows):
    expected = ExportedPredictor.load(exported, runtime="onnxruntime").predict_probs(
        rows, DATA / "data", progress=False)
    export = ExportedPredictor.load(exported, runtime="openvino", precision="bf16")
    run = Predictor.load(frozen_run, runtime="openvino", precision="bf16")
    for predictor in (export, run):
        probs = predictor.predict_probs(rows, DATA / "data", progress=False)
        assert predictor.engine == "openvino"
        assert np.abs(probs - expected).max() < 0.05


def test_the_command_line_refuses_openvino_where_it_is_missing(exported, tmp_path, capsys,
                                                               no_openvino):
    csv = small_csv(tmp_path / "small.csv", 8)
    assert main(["evaluate", str(exported), "--data", str(csv), "--images", str(DATA / "data"),
                 "--runtime", "openvino"]) == 2
    assert "pip install 'captag[openvino]'" in capsys.readouterr().err


@needs_openvino
def test_the_command_line_reports_the_runtime(exported, tmp_path, capsys):
    csv = small_csv(tmp_path / "small.csv", 8)
    assert main(["evaluate", str(exported), "--data", str(csv), "--images", str(DATA / "data"),
                 "--runtime", "openvino", "--precision", "fp32", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["engine"] == "openvino"
    assert set(result["runtimes"].values()) == {"openvino fp32"}


def _image_features(tmp_path, **ways):
    from captag.data import read_records
    from captag.models.registry import model_from_config
    from captag.training.cache import FeatureCache
    from captag.training.features import image_activations
    from conftest import frozen_config
    model = model_from_config(frozen_config(tmp_path, image_size=64, image_trainable=2)).eval()
    return image_activations(model, read_records(MINI)[:24], DATA / "data", 64,
                             FeatureCache(tmp_path), num_workers=0, progress=False, **ways)


def _cached_precisions(cache) -> list[str]:
    return sorted(json.loads(spec.read_text()).get("precision", "fp32")
                  for spec in (cache / "image").rglob("spec.json"))


@needs_bf16
def test_the_feature_pass_caches_bf16_activations_apart_from_fp32(tmp_path):
    from captag.training.features import FEATURE_TOLERANCE
    fp32 = _image_features(tmp_path, runtime="onnxruntime", precision="fp32")
    bf16 = _image_features(tmp_path, runtime="openvino", precision="bf16")
    assert _cached_precisions(tmp_path) == ["bf16", "fp32"]
    assert not torch.equal(bf16, fp32)
    assert engines.relative_change(bf16.float().numpy(), fp32.float().numpy()) < FEATURE_TOLERANCE


@needs_openvino
def test_the_feature_pass_chooses_its_runtime_once(tmp_path, monkeypatch):
    monkeypatch.delenv("CAPTAG_RUNTIME")
    first = _image_features(tmp_path)
    chosen = json.loads((tmp_path / "runtimes.json").read_text())
    assert [list(entry["ways"]) for entry in chosen.values()] == [["image"]]
    monkeypatch.setattr(engines.Runtimes, "choose", lambda *a, **k: pytest.fail("chose again"))
    assert torch.equal(_image_features(tmp_path), first)


def test_without_openvino_the_feature_pass_is_unchanged(tmp_path, monkeypatch, no_openvino):
    monkeypatch.delenv("CAPTAG_RUNTIME")
    _image_features(tmp_path)
    assert _cached_precisions(tmp_path) == ["fp32"]
    assert not (tmp_path / "runtimes.json").exists()


def test_train_refuses_bf16_features_on_a_cpu_without_it_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(engines, "cpu", lambda: {"name": "Old CPU", "flags": ["avx2"]})
    assert main(["train", "--data", str(MINI), "--out", str(tmp_path / "run"),
                 "--feature-precision", "bf16"]) == 2
    assert "--feature-precision bf16 needs a CPU with" in capsys.readouterr().err
