"""Deployment: `captag export` (a run as a standalone ONNX folder, optionally int8) and the
torch-free runtime that predicts from it; `load_predictor` opens either kind of folder."""

from __future__ import annotations

from pathlib import Path

MODEL_YAML = "model.yaml"


def is_export(path) -> bool:
    """Whether `path` is an exported model folder (it holds model.yaml)."""
    return (Path(path) / MODEL_YAML).is_file()


def load_predictor(path, **options):
    """An `ExportedPredictor` for an exported folder (it holds model.yaml), else the run
    folder's `Predictor` (which needs torch)."""
    if is_export(path):
        from captag.deploy.runtime import ExportedPredictor
        return ExportedPredictor.load(Path(path), **options)
    from captag.inference.predictor import Predictor
    return Predictor.load(path, **options)


__all__ = ["MODEL_YAML", "is_export", "load_predictor"]
