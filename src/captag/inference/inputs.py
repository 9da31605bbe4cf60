"""The arguments of `predict(images, captions)` checked, and one prediction as a result dict.

Torch-free: shared by the run folder's `Predictor` and the exported folder's runtime.
"""

from __future__ import annotations

import numpy as np

from captag.errors import InputError
from captag.evaluation.metrics import predict_labels


def is_single(images, captions) -> bool:
    """Whether the call is for one image and caption (not lists of them)."""
    if captions is not None:
        return isinstance(captions, str)
    return not isinstance(images, (list, tuple))


def check_inputs(images, captions, has_image: bool, has_text: bool) -> tuple[list, list[str]]:
    """(images, captions) as lists of the same length; InputError naming what is wrong."""
    images = images if isinstance(images, (list, tuple)) or images is None else [images]
    captions = [captions] if isinstance(captions, str) else captions
    n = len(images) if images is not None else len(captions or [])
    if has_image and (images is None or not images):
        raise InputError("This model reads images: pass images (paths, bytes or PIL images).")
    if has_text and captions is None:
        raise InputError("This model reads captions: pass captions (strings).")
    captions = list(captions) if captions is not None else [""] * n
    if images is not None and len(images) != len(captions):
        raise InputError(f"Got {len(images)} images but {len(captions)} captions: "
                         "pass one caption per image.")
    bad = [i for i, c in enumerate(captions) if not isinstance(c, str)
           or (has_text and not c.strip())]
    if bad:
        raise InputError(f"Caption {bad[0]} is empty or not a string: give every image a "
                         "caption.")
    return list(images) if images else [None] * n, captions


def results(probs: np.ndarray, labels, threshold: float, at_least_one: bool) -> list[dict]:
    """One {"labels": [{"id", "name"}], "probabilities": {name: p}, "threshold": t} per row of
    `probs`, the labels chosen at `threshold` (and the likeliest one with `at_least_one`)."""
    chosen = predict_labels(probs, threshold, at_least_one)
    return [{"labels": [{"id": labels.ids[j], "name": labels.names[j]}
                        for j in np.flatnonzero(row)],
             "probabilities": {name: float(p) for name, p in zip(labels.names, row_probs)},
             "threshold": threshold}
            for row_probs, row in zip(probs, chosen)]
