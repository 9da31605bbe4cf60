"""Image encoders: a timm backbone cut into stages, so that its lower part can be frozen and cached.

`ImageEncoder(name)` builds any timm model by name without its classifier. Its `stages` run in
order from pixels to the last feature map; `forward(x, start=k)` runs stages k.. and pools, so a
batch of cached stage-k activations gives the same features as the pixels they came from.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from captag.errors import ConfigError

from captag.models import weights as weights_lib
from captag.models.catalog import canonical_name, find


def _efficientnet_stages(model: nn.Module) -> list[nn.Module]:
    stem = nn.Sequential(model.conv_stem, model.bn1)
    head = nn.Sequential(model.conv_head, model.bn2)
    return [stem, *[layer for block in model.blocks for layer in block], head]


def _resnet_stages(model: nn.Module) -> list[nn.Module]:
    stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
    layers = [block for name in ("layer1", "layer2", "layer3", "layer4")
              for block in getattr(model, name)]
    return [stem, *layers]


class _ForwardFeatures(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def split_stages(model: nn.Module) -> list[nn.Module]:
    """The model's feature extractor as a list of modules applied in order."""
    if all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        return _efficientnet_stages(model)
    if all(hasattr(model, a) for a in ("conv1", "layer1", "layer4")):
        return _resnet_stages(model)
    return [_ForwardFeatures(model)]


def load_state_in_order(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict whose tensors match the model's in order, whatever their names."""
    state = {k: v for k, v in state.items() if not k.startswith(("_fc.", "classifier.", "fc."))}
    target = {k: v for k, v in model.state_dict().items()}
    if len(state) != len(target):
        raise ValueError(f"Weights have {len(state)} tensors but the model has {len(target)}; "
                         "they are for another architecture.")
    mapped = {}
    for (key, tensor), (src_key, src) in zip(target.items(), state.items()):
        if tuple(tensor.shape) != tuple(src.shape):
            raise ValueError(f"Tensor {src_key} {tuple(src.shape)} does not fit {key} "
                             f"{tuple(tensor.shape)}: the weights are for another architecture.")
        mapped[key] = src
    model.load_state_dict(mapped)


def _read_state(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class ImageEncoder(nn.Module):
    """A timm backbone that maps images to a pooled feature vector.

    `weights`: None (its package, else the hub), 'hub', 'none' (random, with a warning unless
    `warn` is False: a model whose weights are loaded afterwards) or a local file."""

    def __init__(self, name: str = "tf_efficientnet_lite0", weights: str | None = None, *,
                 warn: bool = True):
        super().__init__()
        self.name = canonical_name(name)
        self.source = weights_lib.plan_weights(self.name, weights)
        backbone = self._build(warn)
        self.stages = nn.ModuleList(split_stages(backbone))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.feature_dim = backbone.num_features
        spec, cfg = find(self.name), backbone.pretrained_cfg
        self.mean = spec.mean if spec and spec.mean else tuple(cfg.get("mean", (0.5,) * 3))
        self.std = spec.std if spec and spec.std else tuple(cfg.get("std", (0.5,) * 3))

    def _build(self, warn: bool) -> nn.Module:
        plan = self.source
        if plan.kind == "hub":
            return self._from_hub()
        model = timm.create_model(self.name, pretrained=False, num_classes=0)
        if plan.kind != "none":
            load_state_in_order(model, _read_state(str(weights_lib.fetch(plan))))
        elif warn:
            weights_lib.warn_random(self.name)
        return model

    def _from_hub(self) -> nn.Module:
        if weights_lib.hub_offline():
            raise weights_lib.WeightsNotFoundError(weights_lib.missing_weights_message(
                self.source, RuntimeError("offline: HF_HUB_OFFLINE or CAPTAG_OFFLINE is set")))
        try:
            return timm.create_model(self.source.location, pretrained=True, num_classes=0)
        except (OSError, RuntimeError) as error:  # no network, hub down, no such weights
            raise weights_lib.WeightsNotFoundError(
                weights_lib.missing_weights_message(self.source, error)) from error

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def lower(self, images: torch.Tensor, cut: int) -> torch.Tensor:
        """The activations after the first `cut` stages."""
        h = images
        for stage in self.stages[:cut]:
            h = stage(h)
        return h

    def feature_map(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The last feature map [batch, dim, h, w] from pixels (start 0) or from the
        activations after `start` stages."""
        for stage in self.stages[start:]:
            x = stage(x)
        if x.dim() != 4:
            raise ConfigError(f"{self.name} gives no feature map here (its features are pooled "
                              "or cached pooled): a spatial head needs image_trainable >= 1.")
        return x

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Pooled features from pixels (start 0) or from the activations after `start` stages."""
        if start >= self.num_stages:
            return x if x.dim() == 2 else self.pool(x)
        for stage in self.stages[start:]:
            x = stage(x)
        return self.pool(x)
