"""The model behind the server: one interface over a run folder's Predictor (and, later, an
exported folder's runtime), with the truncation check and the `info()` that the API reports."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def _load(path: str | Path):
    """The predictor of a run folder (checked whole first; RunFolderError when it is not one)."""
    from captag.inference.predictor import Predictor
    return Predictor.load(path)


class ServedModel:
    """A loaded predictor as the server uses it: `predict` on lists, `caption_truncated`, `info`."""

    def __init__(self, predictor, source: str | Path = ""):
        self.predictor = predictor
        self.source = str(source)
        self.labels = predictor.labels
        self.threshold = predictor.threshold

    @classmethod
    def load(cls, path: str | Path) -> "ServedModel":
        """The model of the folder, warmed up by a first prediction (which builds its ONNX
        Runtime session)."""
        model = cls(_load(path), path)
        model.predict([Image.new("RGB", (64, 64), "gray")], ["warm-up"])
        return model

    def predict(self, images: list, captions: list[str]) -> list[dict]:
        """One result per (image, caption), in one batch."""
        return self.predictor.predict(list(images), list(captions), batch_size=max(1, len(captions)))

    def caption_truncated(self, caption: str) -> bool:
        """Whether the text encoder keeps only the first part of the caption."""
        own = getattr(self.predictor, "caption_truncated", None)
        if own is not None:
            return own(caption)
        tokenizer, max_length = self._tokenizer()
        if tokenizer is None or not max_length:
            return False
        return len(tokenizer(caption, truncation=False)["input_ids"]) > max_length

    def _tokenizer(self):
        """(tokenizer, max tokens) of the predictor's text encoder; (None, 0) without one."""
        text = getattr(getattr(self.predictor, "model", None), "text", None)
        if text is not None:
            return text.tokenizer, text.max_length
        return getattr(self.predictor, "tokenizer", None), getattr(self.predictor, "max_length", 0)

    def info(self) -> dict:
        """Model, labels, thresholds, sizes and provenance."""
        own = getattr(self.predictor, "info", None)
        if own is not None:
            return own()
        predictor, cfg = self.predictor, self.predictor.cfg
        _, max_length = self._tokenizer()
        return {
            "model": cfg.model,
            "labels": [{"id": i, "name": n} for i, n in zip(self.labels.ids, self.labels.names)],
            "thresholds": {"global": self.threshold},
            "sizes": {"image_size": cfg.image_size, "max_caption_tokens": max_length,
                      "model_file_mb": round(predictor.run.model.stat().st_size / 2**20, 1)},
            "provenance": {"source": self.source, "kind": "run folder", "engine": predictor.engine},
        }

