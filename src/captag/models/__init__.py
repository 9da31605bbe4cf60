"""Models: image and text encoders by name, and the fused classifier over them.

The names below are imported on first use, so that `captag.models.catalog` (model names,
checked in milliseconds) can be imported without torch, timm or transformers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FusionModel": "fusion", "ImageEncoder": "image", "TextEncoder": "text",
    "create_model": "registry", "model_from_config": "registry", "weights_summary": "registry",
    "WeightsPlan": "weights", "plan_weights": "weights", "fetch": "weights",
    "WeightsNotFoundError": "weights", "check_model": "catalog", "encoder_names": "catalog",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'captag.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"captag.models.{_EXPORTS[name]}"), name)
