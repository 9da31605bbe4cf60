"""Models: image and text encoders by name, and the fused classifier over them."""

from .fusion import FusionModel
from .image import ImageEncoder
from .registry import create_model, model_from_config
from .text import TextEncoder
from .weights import WeightsNotFoundError, WeightsSource

__all__ = ["FusionModel", "ImageEncoder", "TextEncoder", "create_model", "model_from_config",
           "WeightsNotFoundError", "WeightsSource"]
