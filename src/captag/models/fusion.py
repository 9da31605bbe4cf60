"""The seed's classifier: pooled image and caption features, concatenated, then ReLU, dropout, linear.

With one encoder left out it is the image-only or text-only variant of the same model. With
`csra` > 0 the head adds class-specific residual attention (CSRA, Zhu and Wu, ICCV 2021) over the
last image map: each class's linear weights score every map location, and a softmax over the
locations (temperature `csra_temperature`; 0 = max pooling) adds `csra` times the attended
score to the logit, so small objects that global pooling washes out can still fire a class.
It adds no parameters.
`freeze` keeps the lower stages of each encoder fixed (their BatchNorm too) and trains the rest.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from captag.config import RunConfig
from captag.errors import ConfigError
from captag.models.image import ImageEncoder
from captag.models.text import TextEncoder


class FusionModel(nn.Module):
    """Multi-label classifier over an image encoder, a text encoder, or both."""

    def __init__(self, image: ImageEncoder | None, text: TextEncoder | None,
                 num_labels: int = 18, dropout: float = RunConfig.dropout,
                 csra: float = 0.0, csra_temperature: float = RunConfig.csra_temperature):
        super().__init__()
        if image is None and text is None:
            raise ValueError("A model needs an image encoder, a text encoder, or both.")
        if csra and image is None:
            raise ConfigError("csra: class-specific residual attention needs an image encoder.")
        self.csra, self.csra_temperature = csra, csra_temperature
        self.image, self.text = image, text
        dim = (image.feature_dim if image else 0) + (text.feature_dim if text else 0)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, num_labels))
        self.image_cut = 0
        self.text_cut = 0

    def freeze(self, image_trainable: int = -1, text_trainable: int = -1) -> None:
        """Train only the top `*_trainable` stages of each encoder (-1: all, 0: none)."""
        self.image_cut = self._freeze(self.image, image_trainable)
        self.text_cut = self._freeze(self.text, text_trainable)
        if self.csra and self.image_cut >= self.image.num_stages:
            raise ConfigError("csra: the attention needs the image feature map, but the whole "
                              "image encoder is frozen (its cache keeps pooled vectors): set "
                              "image_trainable to 1 or more, or -1.")
        self.train(self.training)

    @staticmethod
    def _freeze(encoder, trainable: int) -> int:
        if encoder is None:
            return 0
        stages = encoder.num_stages
        cut = 0 if trainable < 0 else max(stages - trainable, 0)
        if isinstance(encoder, TextEncoder) and encoder.layers is None and 0 < cut < stages:
            raise ValueError(f"{encoder.name} can only be frozen whole or trained whole: "
                             "use text_trainable 0 or -1.")
        for parameter in encoder.parameters():
            parameter.requires_grad = False
        for module in encoder_stages(encoder)[cut:]:
            for parameter in module.parameters():
                parameter.requires_grad = True
        return cut

    def frozen_keys(self) -> set[str]:
        """State-dict keys of the frozen stages (they come back from the encoders' sources)."""
        names = {id(module): name for name, module in self.named_modules()}
        keys = set()
        for encoder, cut in ((self.image, self.image_cut), (self.text, self.text_cut)):
            for module in (encoder_stages(encoder)[:cut] if encoder is not None else []):
                prefix = names[id(module)]
                keys.update(f"{prefix}.{key}" for key in module.state_dict())
        return keys

    def train(self, mode: bool = True):
        super().train(mode)
        for encoder, cut in ((self.image, self.image_cut), (self.text, self.text_cut)):
            if encoder is not None:
                for module in encoder_stages(encoder)[:cut]:
                    module.eval()
        return self

    def forward(self, image: torch.Tensor | None = None, image_features: torch.Tensor | None = None,
                input_ids: torch.Tensor | None = None, text_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from pixels (`image`) or the cached output of the frozen image stages
        (`image_features`), and from token ids (`input_ids`) or the cached output of the frozen
        text stages (`text_states`: token states, or pooled vectors when all are frozen)."""
        features, maps = [], None
        if self.image is not None:
            pixels = image_features is None
            start = 0 if pixels else self.image_cut
            if self.csra:
                maps = self.image.feature_map(image if pixels else image_features, start)
                features.append(self.image.pool(maps))
            else:
                features.append(self.image(image if pixels else image_features, start=start))
        if self.text is not None:
            features.append(self.text(input_ids, attention_mask, start=0) if text_states is None
                            else self.text(text_states, attention_mask, start=self.text_cut))
        logits = self.head(torch.cat(features, dim=1))
        return logits if maps is None else logits + self.csra * self._attention(maps)

    def _attention(self, maps: torch.Tensor) -> torch.Tensor:
        """CSRA's attended class scores [batch, classes] over the map's locations."""
        weight = self.head[-1].weight[:, :maps.shape[1]]  # the image part of the classifier
        located = self.head[1](self.head[0](maps)).flatten(2)  # ReLU, dropout: [b, d, hw]
        scores = torch.einsum("bdk,cd->bck", located, weight)
        if not self.csra_temperature:
            return scores.amax(-1)
        return (torch.softmax(self.csra_temperature * scores, -1) * scores).sum(-1)


def encoder_stages(encoder) -> list[nn.Module]:
    """An encoder's stages in order, as modules (for freezing)."""
    if isinstance(encoder, ImageEncoder):
        return list(encoder.stages)
    if encoder.layers is None:
        return [encoder.model]
    return [encoder.model.embeddings, *encoder.layers]


MODEL_INPUTS = ("image", "image_features", "input_ids", "text_states", "attention_mask")


def model_inputs(batch: dict) -> dict:
    """The entries of a batch that FusionModel.forward takes (not targets or indices)."""
    return {key: batch[key] for key in MODEL_INPUTS if key in batch}


def probabilities(logits_of, batches) -> np.ndarray:
    """Sigmoid probabilities [rows, labels] of `logits_of(batch)` (a tensor or an array) over
    the batches, without gradients."""
    outputs = []
    with torch.inference_mode():
        for batch in batches:
            outputs.append(torch.sigmoid(torch.as_tensor(logits_of(batch)).float()).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), dtype=np.float32)
