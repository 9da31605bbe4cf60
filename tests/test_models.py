"""Encoders, the fused model and the registry: splits agree with whole models, weights load."""

import pytest
import timm
import torch

from captag.models import FusionModel, ImageEncoder, TextEncoder, WeightsNotFoundError, create_model
from captag.models.image import load_state_in_order
from captag.models.registry import encoder_names


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
    with pytest.raises(ValueError, match="Unknown model"):
        encoder_names("not_a_model_xyz", "a", "b")


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
