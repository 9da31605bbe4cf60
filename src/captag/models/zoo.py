"""The model zoo: every catalog encoder alone, and fused models, described.

`zoo_names()` lists them from the catalog: image encoders alone, text encoders alone, and fused
IMAGE+TEXT models (the seed's EfficientNet-B0..B3 with TinyBERT, and every pair of encoders
whose weights a package ships). `describe(name)` gives, for the whole 18-label classifier that
`create_model(name)` builds, its exact parameter count, its fp32 size and the size of the
float16 model file a run saves (counted on the meta device: nothing is allocated, no weights are
read, the hub is not asked), whether that file fits the 100 MB budget, and where a build without
the hub would take its weights from ("package", "file", or "none"), with the pip packages that
ship them.
"""

from __future__ import annotations

import functools
import warnings

import torch

from captag.config import RunConfig
from captag.evaluation.size import BUDGET_MB, parameter_count, parameter_mb
from captag.models import catalog
from captag.models import weights as weights_lib
from captag.models.fusion import FusionModel
from captag.models.image import ImageEncoder
from captag.models.text import TextEncoder

NUM_LABELS = 18
KINDS = ("image", "text", "fused")


def zoo_names(kind: str | None = None) -> list[str]:
    """The zoo's model names, all or of one kind ("image", "text" or "fused")."""
    offline_pairs = [f"{image}+{text}" for image in catalog.names("image", offline=True)
                     for text in catalog.names("text", offline=True)]
    groups = {"image": catalog.names("image"), "text": catalog.names("text"),
              "fused": [*catalog.SEED_FUSED, *offline_pairs]}
    if kind is None:
        return [name for k in KINDS for name in groups[k]]
    if kind not in groups:
        raise ValueError(f"Unknown kind {kind!r}: use one of {', '.join(KINDS)}.")
    return groups[kind]


def meta_build(build):
    """Build on the meta device (no memory, no init cost), offline and without the
    "randomly initialised" warning; fall back to a normal CPU build if meta fails."""
    with warnings.catch_warnings(), weights_lib.no_hub():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                return build()
        except Exception:  # an architecture whose init needs real tensors
            return build()


@functools.lru_cache(maxsize=None)
def meta_image_encoder(name: str) -> ImageEncoder:
    """The image encoder `name`, built randomly on the meta device (for its size)."""
    return meta_build(lambda: ImageEncoder(name, "none"))


@functools.lru_cache(maxsize=None)
def meta_text_encoder(name: str, max_length: int = 64) -> TextEncoder:
    """The text encoder `name`, built randomly on the meta device (for its size)."""
    return meta_build(lambda: TextEncoder(name, "none", max_length=max_length))


def describe(name: str, *, image_weights: str | None = None, text_weights: str | None = None,
             image_encoder: str = RunConfig.image_encoder, text_encoder: str = RunConfig.text_encoder,
             num_labels: int = NUM_LABELS, max_length: int = 64) -> dict:
    """What `create_model(name)` builds: kind, exact size, budget, and where its weights are.

    Keys: name, kind (image/text/fused), image and text (encoder names or None), parameters,
    size_mb (fp32 parameters and buffers, MB = 2**20 bytes), file_mb (the model file a run saves,
    in float16: half of size_mb), within_budget (file_mb <= 100), weights (`describe_sources`:
    "package", "file", "none", or "image:KIND text:KIND" when they differ), weights_sources
    ({role: kind}), offline_weights (every encoder has weights offline), pip (the package(s)
    that ship the weights, space-separated, or None) and install (the pip command).
    """
    image, text = catalog.encoder_names(name, image_encoder, text_encoder)
    text = catalog.canonical_name(text) if text else None
    image_model = meta_image_encoder(image) if image else None
    text_model = meta_text_encoder(text, max_length) if text else None
    with torch.device("meta"):
        model = FusionModel(image_model, text_model, num_labels=num_labels)
    size_mb = parameter_mb(model)
    file_mb = size_mb / 2  # a run saves the model in float16
    plans = {role: weights_lib.plan_weights(encoder, weights) for role, encoder, weights in
             (("image", image, image_weights), ("text", text, text_weights)) if encoder}
    sources = {role: plan.offline_kind for role, plan in plans.items()}
    packages = [spec.package.pip for spec in map(catalog.find, (image, text))
                if spec and spec.package]
    return {
        "name": name, "kind": "fused" if image and text else ("image" if image else "text"),
        "image": image, "text": text,
        "parameters": parameter_count(model),
        "size_mb": round(size_mb, 3),
        "file_mb": round(file_mb, 3),
        "within_budget": file_mb <= BUDGET_MB,
        "weights": weights_lib.describe_sources(sources),
        "weights_sources": sources,
        "offline_weights": all(plan.offline for plan in plans.values()),
        "pip": " ".join(packages) if packages else None,
        "install": catalog.install_command([e for e in (image, text) if e]),
    }


def zoo_table(kind: str | None = None) -> list[dict]:
    """`describe` for every zoo model (or those of one kind), in `zoo_names` order."""
    return [describe(name) for name in zoo_names(kind)]
