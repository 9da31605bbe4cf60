"""Deterministic train/validation split of image IDs, saved as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from captag.errors import ConfigError

from .labels import read_json_lists


def id_key(image_id: str):
    """Sort key that orders '2.jpg' before '10.jpg'; non-numeric IDs go last, by name."""
    stem = image_id.split(".", 1)[0]
    return (0, int(stem), image_id) if stem.isdigit() else (1, 0, image_id)


def split_ids(ids: Sequence[str], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split IDs into (train, val); the result depends only on the set of IDs and the seed.

    val_fraction 0 gives an empty validation list; a fraction that would leave no training
    rows raises ConfigError."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}. Use 0 for no validation set.")
    ordered = sorted(ids, key=id_key)
    if len(set(ordered)) != len(ordered):
        raise ValueError("split_ids got duplicate image IDs; each ID must appear once.")
    n_val = round(len(ordered) * val_fraction)
    if ordered and n_val == len(ordered):
        raise ConfigError(f"val_fraction {val_fraction} leaves no training rows out of {len(ordered)}. "
                          "Use a smaller val_fraction.")
    perm = np.random.default_rng(seed).permutation(len(ordered))
    val_idx = set(perm[:n_val].tolist())
    train = [x for i, x in enumerate(ordered) if i not in val_idx]
    val = [x for i, x in enumerate(ordered) if i in val_idx]
    return train, val


def in_split_order(records: Sequence, keys: Sequence[str]) -> list:
    """The records whose key is in `keys`, in the order of `keys` (the rows that share a key,
    such as several captions of one image, together, in file order)."""
    by_key: dict[str, list] = {}
    for record in records:
        by_key.setdefault(record.key, []).append(record)
    return [record for key in keys for record in by_key.get(key, [])]


def save_split(path: str | Path, train_ids: Sequence[str], val_ids: Sequence[str], seed: int, val_fraction: float) -> None:
    data = {"seed": seed, "val_fraction": val_fraction, "train": list(train_ids), "val": list(val_ids)}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def load_split(path: str | Path) -> tuple[list[str], list[str]]:
    """(train IDs, val IDs) saved in `path`; RunFolderError naming the file if it is missing or bad."""
    expected = "a split file: JSON with 'train' and 'val' lists of image IDs"
    train, val = read_json_lists(path, expected, train=str, val=str)
    return train, val
