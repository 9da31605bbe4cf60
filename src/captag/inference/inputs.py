"""The arguments of `predict(images, captions)` checked, rows of a table turned into those
arguments, and one prediction as a result dict.

Torch-free: shared by the run folder's `Predictor` and the exported folder's runtime.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from captag.data.sources import DataOptions, read_data, read_rows
from captag.data.tables import EXTENSIONS
from captag.errors import InputError
from captag.evaluation.metrics import predict_labels


def is_table(images, captions) -> bool:
    """Whether `predict` was given rows rather than images and captions: a DataFrame, a list
    of dicts, or the path of a data file or an imagefolder (with no captions)."""
    if captions is not None:
        return False
    if hasattr(images, "to_dict"):
        return True
    if isinstance(images, (list, tuple)):
        return bool(images) and all(isinstance(row, dict) for row in images)
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        return path.is_dir() or path.suffix.lower() in EXTENSIONS
    return False


def table_inputs(rows, settings: dict, options: DataOptions | None) -> tuple[list | None, list | None]:
    """(images, captions) of every row of `rows` (see `is_table`), read with the model's own
    data settings, those of `options` winning; None for a column the data does not have."""
    options = (options or DataOptions()).over(settings)
    if isinstance(rows, (str, os.PathLike)):
        data = read_data(rows, options)
    else:
        data = read_rows(rows.to_dict("records") if hasattr(rows, "to_dict") else rows, options)
    images = ([data.image_dir() / r.image_id for r in data.records]
              if data.image_column else None)
    captions = [r.caption for r in data.records] if data.text_column else None
    return images, captions


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
