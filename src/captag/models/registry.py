"""Build any model by name, or from a run's config, in the way of timm's `create_model`.

Names: `fusion` (the default encoders), `image-only`, `text-only`, an image encoder alone
(`resnet50`), a text encoder alone (`bert-base-uncased`), or two joined with `+`
(`efficientnet_b3+tinybert`); `encoder_names` (from the catalog) says which encoders they are.
"""

from __future__ import annotations

from captag.config import AUTO_CSRA, RunConfig
from captag.models.catalog import encoder_names
from captag.models.fusion import FusionModel
from captag.models.image import ImageEncoder
from captag.models.text import TextEncoder
from captag.models.weights import describe_sources

__all__ = ["encoder_names", "create_model", "model_from_config", "weights_summary"]


def create_model(model: str = "fusion", *, image_encoder: str = RunConfig.image_encoder,
                 text_encoder: str = RunConfig.text_encoder, image_weights: str | None = None,
                 text_weights: str | None = None, num_labels: int = 18,
                 dropout: float = RunConfig.dropout, max_length: int = RunConfig.max_length,
                 text_config_dir: str | None = None, csra: float = 0.0,
                 csra_temperature: float = RunConfig.csra_temperature) -> FusionModel:
    """Build the model that `model` names, with weights from package, file or hub.

    With `text_config_dir` (a saved text config and tokenizer folder) it builds the architecture
    only, for weights loaded afterwards: no weights are looked for, no warning is given."""
    image_name, text_name = encoder_names(model, image_encoder, text_encoder)
    rebuild = text_config_dir is not None
    image = (ImageEncoder(image_name, "none" if rebuild else image_weights, warn=not rebuild)
             if image_name else None)
    text = (TextEncoder(text_name, text_weights, max_length=max_length, config_dir=text_config_dir)
            if text_name else None)
    return FusionModel(image, text, num_labels=num_labels, dropout=dropout, csra=csra,
                       csra_temperature=csra_temperature)


def csra_weight(cfg: RunConfig) -> float:
    """`csra`, or when unset AUTO_CSRA for a model whose image encoder trains stages (the
    attention needs their map), else 0."""
    if cfg.csra is not None:
        return cfg.csra
    image, _ = encoder_names(cfg.model, cfg.image_encoder, cfg.text_encoder)
    return AUTO_CSRA if image and cfg.image_trainable != 0 else 0.0


def model_from_config(cfg: RunConfig, num_labels: int = 18, text_config_dir=None) -> FusionModel:
    """The model a run config describes, with its freeze cuts applied. With `text_config_dir`
    (a run folder's text_encoder/) the architecture only, to load a saved state into."""
    model = create_model(cfg.model, image_encoder=cfg.image_encoder, text_encoder=cfg.text_encoder,
                         image_weights=cfg.image_weights, text_weights=cfg.text_weights,
                         num_labels=num_labels, dropout=cfg.dropout, max_length=cfg.max_length,
                         text_config_dir=None if text_config_dir is None else str(text_config_dir),
                         csra=csra_weight(cfg), csra_temperature=cfg.csra_temperature)
    model.freeze(cfg.image_trainable, cfg.text_trainable)
    return model


def weights_summary(model: FusionModel) -> dict:
    """Where a built model's encoders took their weights from: {"weights": "package" (or
    "image:package text:none"), "weights_sources": {role: "kind:location"}}."""
    encoders = {"image": model.image, "text": model.text}
    plans = {role: encoder.source for role, encoder in encoders.items() if encoder is not None}
    return {"weights": describe_sources({role: plan.kind for role, plan in plans.items()}),
            "weights_sources": {role: plan.describe() for role, plan in plans.items()}}
