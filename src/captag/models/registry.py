"""Build any model by name from one config, in the way of timm's `create_model`.

Names: `fusion` (the default encoders), `image-only`, `text-only`, an image encoder alone
(`resnet50`), a text encoder alone (`bert-base-uncased`), or two joined with `+`
(`efficientnet_b3+tinybert`).
"""

from __future__ import annotations

import timm

from captag.models.fusion import FusionModel
from captag.models.image import ImageEncoder
from captag.models.text import ALIASES, OFFLINE_CONFIGS, TextEncoder

SEED_IMAGE_MODELS = ("resnet50", "mobilenetv2_100", "efficientnet_b0", "efficientnet_b1",
                     "efficientnet_b2", "efficientnet_b3", "efficientnet_b4")
SEED_TEXT_MODELS = ("bert-base-uncased", "huawei-noah/TinyBERT_General_4L_312D")
OFFLINE_IMAGE_MODELS = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
OFFLINE_TEXT_MODELS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")


def is_text_name(name: str) -> bool:
    return name in ALIASES or name in OFFLINE_CONFIGS or "/" in name or "bert" in name.lower()


def is_image_name(name: str) -> bool:
    return not is_text_name(name) and bool(timm.list_models(name))


def encoder_names(model: str, image_encoder: str, text_encoder: str) -> tuple[str | None, str | None]:
    """Which (image, text) encoders a model name stands for."""
    if model == "fusion":
        return image_encoder, text_encoder
    if model == "image-only":
        return image_encoder, None
    if model == "text-only":
        return None, text_encoder
    if "+" in model:
        image, text = model.split("+", 1)
        if not (is_image_name(image) and is_text_name(text)):
            raise ValueError(f"Model {model!r}: write fused models as IMAGE+TEXT, "
                             "e.g. efficientnet_b3+tinybert.")
        return image, text
    if is_text_name(model):
        return None, model
    if is_image_name(model):
        return model, None
    raise ValueError(f"Unknown model {model!r}. Use fusion, image-only, text-only, a timm image "
                     "model, a transformers text model, or IMAGE+TEXT.")


def create_model(model: str = "fusion", *, image_encoder: str = "tf_efficientnet_lite0",
                 text_encoder: str = "all-MiniLM-L6-v2", image_weights: str | None = None,
                 text_weights: str | None = None, num_labels: int = 18, dropout: float = 0.2,
                 max_length: int = 64) -> FusionModel:
    """Build the model that `model` names, with weights from package, file or hub."""
    image_name, text_name = encoder_names(model, image_encoder, text_encoder)
    image = ImageEncoder(image_name, image_weights) if image_name else None
    text = TextEncoder(text_name, text_weights, max_length=max_length) if text_name else None
    return FusionModel(image, text, num_labels=num_labels, dropout=dropout)


def model_from_config(cfg, num_labels: int = 18) -> FusionModel:
    model = create_model(cfg.model, image_encoder=cfg.image_encoder, text_encoder=cfg.text_encoder,
                         image_weights=cfg.image_weights, text_weights=cfg.text_weights,
                         num_labels=num_labels, dropout=cfg.dropout, max_length=cfg.max_length)
    model.freeze(cfg.image_trainable, cfg.text_trainable)
    return model
