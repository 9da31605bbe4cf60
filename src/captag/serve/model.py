"""The model behind the server: a run folder's Predictor or an exported folder's runtime
(`captag.deploy.load_predictor`), warmed up, with the calls the API makes."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from captag.deploy import load_predictor


class ServedModel:
    """A loaded predictor as the server uses it: `predict` on lists, `caption_truncated`, `info`."""

    def __init__(self, predictor, source: str | Path = ""):
        self.predictor = predictor
        self.source = str(source)
        self.labels = predictor.labels
        self.threshold = predictor.threshold

    @classmethod
    def load(cls, path: str | Path, **options) -> "ServedModel":
        """The model of the folder (`options`: of `captag.deploy.load_predictor`, e.g. runtime
        and precision), warmed up by a first prediction (which builds its ONNX graphs' runtime,
        and chooses it on a single sample when that is "auto")."""
        model = cls(load_predictor(path, **options), path)
        model.predict([Image.new("RGB", (64, 64), "gray")], ["warm-up"])
        return model

    def predict(self, images: list, captions: list[str]) -> list[dict]:
        """One result per (image, caption), in one batch."""
        return self.predictor.predict(list(images), list(captions), batch_size=max(1, len(captions)))

    def caption_truncated(self, caption: str) -> bool:
        """Whether the text encoder keeps only the first part of the caption."""
        return self.predictor.caption_truncated(caption)

    def info(self) -> dict:
        """Model, labels, thresholds, sizes and provenance."""
        return self.predictor.info()
