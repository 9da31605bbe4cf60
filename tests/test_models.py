"""Encoders, the fused model, the catalog and the registry: splits agree with whole models,
weights load, names are checked, a model is rebuilt from a run's config."""

import inspect
import subprocess
import sys
import warnings

import pytest
import timm
import torch

from captag.config import RunConfig
from captag.errors import ConfigError
from captag.models import FusionModel, ImageEncoder, TextEncoder, WeightsNotFoundError, create_model
from captag.models.catalog import (ENCODERS, canonical_name, check_model, encoder_kind,
                                   encoder_names, find, get, names)
from captag.models.image import load_state_in_order
from captag.models.registry import model_from_config, weights_summary


@pytest.fixture(scope="module")
def lite0():
    return ImageEncoder("tf_efficientnet_lite0").eval()


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder("all-MiniLM-L6-v2").eval()


def test_lite0_loads_packaged_imagenet_weights(lite0):
    assert lite0.source.kind == "package"
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    state = torch.load(lite0.source.location, map_location="cpu", weights_only=True)
    load_state_in_order(reference, state)
    reference.eval()
    assert torch.equal(reference.conv_stem.weight, state["_conv_stem.weight"])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(lite0(x), reference(x), atol=1e-5)


@pytest.mark.parametrize("cut", [1, 8, 15, 18])
def test_image_cut_gives_same_features(lite0, cut):
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(lite0(x), lite0(lite0.lower(x, cut), start=cut), atol=1e-5)


def test_text_cut_gives_same_features(minilm):
    tokens = minilm.tokenize(["a man riding a horse", "two cats on a long sofa by the window"])
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    with torch.no_grad():
        whole = minilm(ids, mask)
        for cut in (1, 4, 6):
            assert torch.allclose(whole, minilm(minilm.lower(ids, mask, cut), mask, start=cut), atol=1e-5)
    assert whole.shape == (2, 384)


def test_weights_of_another_architecture_are_refused():
    model = timm.create_model("mobilenetv2_100", pretrained=False)
    state = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    with pytest.raises(ValueError, match="another architecture"):
        load_state_in_order(model, state)


def test_missing_local_weights_file_is_named(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        ImageEncoder("tf_efficientnet_lite0", weights=str(tmp_path / "nope.pth"))


def test_local_weights_file_is_used(tmp_path, lite0):
    path = tmp_path / "lite0.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict(), path)
    encoder = ImageEncoder("tf_efficientnet_lite0", weights=str(path))
    assert encoder.source.kind == "file"
    first = next(iter(encoder.state_dict().values()))
    assert not torch.equal(first, next(iter(lite0.state_dict().values())))


def test_offline_hub_failure_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="--weights"):
        TextEncoder("bert-base-uncased", weights="hub")


def test_random_weights_warn(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(UserWarning, match="randomly initialised"):
        encoder = TextEncoder("tinybert", weights="none")
    assert encoder.feature_dim == 312 and encoder.source.kind == "none"


def test_rebuild_from_a_run_config_loads_nothing_and_applies_the_cuts(tmp_path, minilm,
                                                                      monkeypatch):
    minilm.save_config(str(tmp_path / "text_encoder"))
    cfg = RunConfig(image_trainable=3, text_trainable=2)
    from captag.models import weights
    monkeypatch.setattr(weights, "fetch", lambda plan: pytest.fail("weights looked up"))
    monkeypatch.setattr(weights, "_package_location", lambda p: pytest.fail("package looked up"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "randomly initialised" warning
        model = model_from_config(cfg, text_config_dir=tmp_path / "text_encoder")
    assert model.image_cut == model.image.num_stages - 3 and model.text_cut == 7 - 2
    assert model.head[1].p == cfg.dropout
    assert weights_summary(model) == {"weights": "none",
                                      "weights_sources": {"image": "none", "text": "none"}}


def test_weights_summary_of_a_built_model(lite0):
    model = FusionModel(lite0, None)
    summary = weights_summary(model)
    assert summary["weights"] == "package"
    assert summary["weights_sources"] == {"image": f"package:{lite0.source.location}"}


@pytest.mark.parametrize("name, expected", [
    ("fusion", ("tf_efficientnet_lite0", "all-MiniLM-L6-v2")),
    ("image-only", ("tf_efficientnet_lite0", None)),
    ("text-only", (None, "all-MiniLM-L6-v2")),
    ("efficientnet_b3+tinybert", ("efficientnet_b3", "tinybert")),
    ("resnet50", ("resnet50", None)),
    ("bert-base-uncased", (None, "bert-base-uncased")),
])
def test_registry_names(name, expected):
    assert encoder_names(name, "tf_efficientnet_lite0", "all-MiniLM-L6-v2") == expected


def test_unknown_model_name_is_explained():
    with pytest.raises(ConfigError, match="model: unknown model 'not_a_model_xyz'"):
        encoder_names("not_a_model_xyz", "a", "b")


@pytest.mark.parametrize("model, image, text, words", [
    ("resnet5O", "tf_efficientnet_lite0", "minilm",
     ["model:", "'resnet5O'", "did you mean 'resnet50'"]),
    ("fusion", "resnt50", "minilm", ["image_encoder:", "'resnt50'", "did you mean 'resnet50'"]),
    ("fusion", "tf_efficientnet_lite0", "tinybrt", ["text_encoder:", "did you mean 'tinybert'"]),
    ("fusion", "tinybert", "minilm", ["image_encoder:", "'tinybert' is a text encoder"]),
    ("text-only", "x", "resnet50", ["text_encoder:", "'resnet50' is an image encoder"]),
    ("tinybert+efficientnet_b0", "x", "y", ["model:", "'tinybert' is a text encoder"]),
    ("efficientnet_b0+tinybret", "x", "y", ["model:", "did you mean 'tinybert'"]),
])
def test_check_model_names_the_field(model, image, text, words):
    with pytest.raises(ConfigError) as error:
        check_model(model, image, text)
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_check_model_accepts_every_form():
    for model in ("fusion", "image-only", "text-only", "efficientnet_b3+tinybert", "resnet50",
                  "minilm", "vit_tiny_patch16_224", "someone/a-text-model"):
        check_model(model, "tf_efficientnet_lite0", "all-MiniLM-L6-v2")
    check_model("image-only", "tf_efficientnet_lite0", "not-checked")  # unused encoder


def test_catalog_imports_nothing_heavy_and_checks_names_fast():
    code = ("import sys, time; t = time.perf_counter(); "
            "from captag.models.catalog import check_model; "
            "check_model('efficientnet_b3+tinybert', 'tf_efficientnet_lite0', 'minilm'); "
            "print(time.perf_counter() - t, [m for m in ('torch', 'timm', 'transformers') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, heavy = out.stdout.split(" ", 1)
    assert heavy.strip() == "[]" and float(seconds) < 0.5


def test_aliases_and_lookups():
    assert canonical_name("minilm") == canonical_name("all-MiniLM-L6-v2") == \
        "sentence-transformers/all-MiniLM-L6-v2"
    assert canonical_name("tinybert") == "huawei-noah/TinyBERT_General_4L_312D"
    assert canonical_name("all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    assert canonical_name("resnet18") == "resnet18"  # outside the catalog: unchanged
    assert get("tinybert") is find("huawei-noah/TinyBERT_General_4L_312D")
    with pytest.raises(ConfigError, match="did you mean 'minilm'"):
        get("minilmm")
    assert names("image", seed=True) == ["resnet50", "mobilenetv2_100"] + [
        f"efficientnet_b{i}" for i in range(5)]
    assert names("image", offline=True) == [f"tf_efficientnet_lite{i}" for i in range(3)]
    assert names("text", seed=True) == ["bert-base-uncased", "huawei-noah/TinyBERT_General_4L_312D"]
    assert names("text", offline=True) == ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]


@pytest.mark.parametrize("name, kind", [
    ("tinybert", "text"), ("bert-base-uncased", "text"), ("efficientnet_b2", "image"),
    ("resnet18", "image"), ("convnext_tiny", "image"), ("someone/tiny-bert", "text")])
def test_encoder_kind(name, kind):
    assert encoder_kind(name) == kind


def test_encoder_kind_of_a_local_folder_and_an_unknown_name(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert encoder_kind(str(tmp_path)) == "text"
    with pytest.raises(ConfigError, match="unknown encoder 'efficientnet_b9x'.*did you mean"):
        encoder_kind("efficientnet_b9x")
    with pytest.raises(ConfigError, match="unknown encoder 'distilbert-base-uncased'"):
        encoder_kind("distilbert-base-uncased")  # no guessing from "bert": write owner/name


@pytest.mark.parametrize("spec", [s for s in ENCODERS.values() if s.kind == "image"],
                         ids=lambda s: s.name)
def test_catalog_mean_and_std_are_timm_s(spec):
    with torch.device("meta"):
        cfg = timm.create_model(spec.name, pretrained=False).pretrained_cfg
    assert (spec.mean, spec.std) == (tuple(cfg["mean"]), tuple(cfg["std"]))


def test_dropout_has_one_default(lite0):
    assert FusionModel(lite0, None).head[1].p == RunConfig().dropout == 0.3
    assert inspect.signature(create_model).parameters["dropout"].default == RunConfig().dropout


def test_freeze_trains_only_the_top_stages():
    model = create_model("fusion")
    model.freeze(image_trainable=2, text_trainable=1)
    assert model.image_cut == model.image.num_stages - 2
    assert model.text_cut == model.text.num_stages - 1
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"image", "text", "head"}
    assert not any(p.requires_grad for p in model.image.stages[0].parameters())
    model.train()
    assert not model.image.stages[0].training and model.image.stages[-1].training
    frozen = model.frozen_keys()
    assert "image.stages.0.0.weight" in frozen and "head.2.weight" not in frozen


def test_fusion_needs_an_encoder():
    with pytest.raises(ValueError):
        FusionModel(None, None)


def test_csra_head_attends_over_the_image_map_and_needs_one():
    import torch
    from captag.errors import ConfigError
    from captag.models.registry import create_model
    torch.manual_seed(0)
    plain = create_model("image-only", image_weights="none")
    attended = create_model("image-only", image_weights="none", csra=0.5, csra_temperature=0)
    attended.load_state_dict(plain.state_dict())  # CSRA adds no parameters
    plain.eval(), attended.eval()
    images = torch.randn(2, 3, 64, 64)
    maps = plain.image.feature_map(images)
    weight = plain.head[-1].weight
    scores = torch.einsum("bdk,cd->bck", torch.relu(maps).flatten(2), weight)
    with torch.no_grad():
        expected = plain(image=images) + 0.5 * scores.amax(-1)
        assert torch.allclose(attended(image=images), expected, atol=1e-5)
    soft = create_model("image-only", image_weights="none", csra=0.5, csra_temperature=1.0)
    soft.load_state_dict(plain.state_dict())
    soft.eval()
    with torch.no_grad():
        attention = (torch.softmax(scores, -1) * scores).sum(-1)
        assert torch.allclose(soft(image=images), plain(image=images) + 0.5 * attention, atol=1e-5)
    attended.freeze(image_trainable=2, text_trainable=0)  # cached maps before the top 2 stages
    cached = attended.image.lower(images, attended.image_cut)
    with torch.no_grad():
        assert torch.allclose(attended(image_features=cached), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="csra"):
        attended.freeze(image_trainable=0, text_trainable=0)
    with pytest.raises(ConfigError, match="csra"):
        create_model("text-only", text_weights="none", csra=0.5)


def test_unset_csra_attends_only_when_image_stages_train():
    from captag.config import AUTO_CSRA, RunConfig
    from captag.models.registry import csra_weight
    cfg = RunConfig()
    assert cfg.csra is None and csra_weight(cfg) == AUTO_CSRA  # the default trains 3 stages
    assert csra_weight(cfg.update(image_trainable=-1)) == AUTO_CSRA  # --finetune
    assert csra_weight(cfg.update(image_trainable=0)) == 0.0  # frozen: pooled vectors cached
    assert csra_weight(cfg.update(model="text-only")) == 0.0
    assert csra_weight(cfg.update(csra=0.0)) == 0.0 and csra_weight(cfg.update(csra=0.3)) == 0.3
