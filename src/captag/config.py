"""One run's settings: a dataclass that reads YAML, takes CLI overrides and is saved resolved."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class RunConfig:
    """Everything that decides what a run does. Saved as config.yaml in the run folder."""

    csv: str = ""
    images: str | None = None
    model: str = "fusion"
    image_encoder: str = "tf_efficientnet_lite0"
    text_encoder: str = "all-MiniLM-L6-v2"
    image_weights: str | None = None
    text_weights: str | None = None
    image_trainable: int = 3      # top image stages trained; 0 frozen, -1 all
    text_trainable: int = 2       # top text layers trained; 0 frozen, -1 all
    image_size: int = 224
    max_length: int = 64
    dropout: float = 0.3
    epochs: int = 3
    batch_size: int = 32
    lr: float = 2e-4              # encoders
    head_lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "linear"      # constant, linear or cosine decay (per step)
    warmup: float = 0.05          # fraction of steps of linear warm-up
    seed: int = 0
    val_fraction: float = 0.2
    hflip: float = 0.5
    rotation: float = 10.0
    feature_flip: float = 0.0  # flip cached image feature maps in training, with this probability
    at_least_one: bool = True
    skip_bad: bool = False
    cache_dir: str | None = None
    num_workers: int = 1
    accelerator: str = "auto"
    devices: str = "auto"
    precision: str = "32-true"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls().update(**data)

    def update(self, **overrides) -> "RunConfig":
        """A copy with the given fields replaced; None values are ignored, unknown names rejected."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"Unknown config option(s) {unknown}. Known options: {sorted(known)}.")
        values = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
