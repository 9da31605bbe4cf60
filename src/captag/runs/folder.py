"""The run folder: what a run writes, and how a later command loads the model back from it alone.

    config.yaml       resolved settings            labels.json     the label map
    split.json        train and validation IDs     thresholds.json tuned decision threshold
    metrics.csv       one row per epoch            summary.json    final validation scores, sizes, times
    model.safetensors best weights (float16)       text_encoder/   text config and tokenizer
    checkpoints/      Lightning checkpoints (best.ckpt, last.ckpt) of the trained part, for resume
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from captag.config import RunConfig
from captag.data.labels import LabelMap
from captag.models.fusion import FusionModel
from captag.models.image import ImageEncoder
from captag.models.registry import encoder_names
from captag.models.text import TextEncoder


class RunFolder:
    """Paths of one run folder, and loading and saving of its model."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.labels = self.path / "labels.json"
        self.split = self.path / "split.json"
        self.thresholds = self.path / "thresholds.json"
        self.metrics = self.path / "metrics.csv"
        self.summary = self.path / "summary.json"
        self.bad_images = self.path / "bad_images.json"
        self.model = self.path / "model.safetensors"
        self.text_encoder = self.path / "text_encoder"
        self.checkpoints = self.path / "checkpoints"

    def check(self) -> None:
        missing = [p.name for p in (self.config, self.labels, self.model, self.thresholds)
                   if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"{self.path} is not a finished captag run folder: {', '.join(missing)} missing. "
                "Train into it with `captag train --out DIR`, or resume it with --resume DIR.")

    def load_config(self) -> RunConfig:
        return RunConfig.from_yaml(self.config)

    def save_model(self, model: FusionModel) -> None:
        state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v.detach()
                 for k, v in model.state_dict().items()}
        save_file({k: v.contiguous() for k, v in state.items()}, self.model)
        if model.text is not None:
            model.text.save_config(str(self.text_encoder))

    def load_model(self) -> FusionModel:
        """The trained model, built from the run folder alone, in eval mode and float32."""
        self.check()
        cfg = self.load_config()
        labels = LabelMap.load(self.labels)
        image_name, text_name = encoder_names(cfg.model, cfg.image_encoder, cfg.text_encoder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            image = ImageEncoder(image_name, weights="none") if image_name else None
        text = (TextEncoder(text_name, max_length=cfg.max_length, config_dir=str(self.text_encoder))
                if text_name else None)
        model = FusionModel(image, text, num_labels=len(labels), dropout=cfg.dropout)
        state = {k: v.float() if v.is_floating_point() else v
                 for k, v in load_file(self.model).items()}
        model.load_state_dict(state)
        return model.eval()

    def write_json(self, path: Path, data) -> None:
        path.write_text(json.dumps(data, indent=2) + "\n")
