"""Inference: label probabilities from a finished run folder, `evaluate` and `predict`."""
