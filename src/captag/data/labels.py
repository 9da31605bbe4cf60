"""Label maps: the COMP5329 label set (COCO class IDs 1..19 without 12) or any other set of
labels (their names are their IDs), and a multi-hot encoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from captag.errors import RunFolderError
from captag.files import read_json

LABEL_NAMES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus",
    7: "train", 8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant",
    13: "stop sign", 14: "parking meter", 15: "bench", 16: "bird", 17: "cat",
    18: "dog", 19: "horse",
}
LABEL_IDS: tuple[int, ...] = tuple(LABEL_NAMES)


@dataclass(frozen=True)
class LabelMap:
    """Maps label IDs (integers, or names) to columns of a multi-hot vector, in the order of `ids`."""

    ids: tuple[int | str, ...]
    names: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "ids", tuple(i if isinstance(i, str) else int(i) for i in self.ids))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if len(self.ids) != len(self.names):
            raise ValueError(f"LabelMap got {len(self.ids)} ids but {len(self.names)} names; give one name per id.")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"LabelMap ids must be unique, got {list(self.ids)}.")

    @classmethod
    def default(cls) -> LabelMap:
        return cls(LABEL_IDS, tuple(LABEL_NAMES[i] for i in LABEL_IDS))

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def _column(self) -> dict[int, int]:
        return {label: col for col, label in enumerate(self.ids)}

    def encode(self, labels: Sequence[int]) -> np.ndarray:
        """Multi-hot float32 vector of length len(self) for one row's labels."""
        row = np.zeros(len(self), dtype=np.float32)
        for label in labels:
            if label not in self._column:
                raise ValueError(f"Label {label!r} is not in the label map {list(self.ids)}.")
            row[self._column[label]] = 1.0
        return row

    def encode_many(self, label_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """Multi-hot float32 matrix [n, len(self)]."""
        out = np.zeros((len(label_lists), len(self)), dtype=np.float32)
        for i, labels in enumerate(label_lists):
            out[i] = self.encode(labels)
        return out

    def decode(self, row) -> list[int]:
        """Label IDs whose entry is on (True, 1, or above 0.5), in label-map order."""
        row = np.asarray(row)
        if row.shape != (len(self),):
            raise ValueError(f"decode expects a vector of length {len(self)}, got shape {row.shape}.")
        return [self.ids[j] for j in np.flatnonzero(row > 0.5)]

    def as_list(self) -> list[dict]:
        """[{"id", "name"}] for each label, in order."""
        return [{"id": i, "name": n} for i, n in zip(self.ids, self.names)]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"ids": list(self.ids), "names": list(self.names)},
                                         indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LabelMap:
        """The label map saved in `path`; RunFolderError naming the file if it is missing or bad."""
        expected = ("a label map: JSON with an 'ids' list of integers or strings and a 'names' "
                    "list of strings")
        ids, names = read_json_lists(path, expected, ids=(int, str), names=str)
        try:
            return cls(ids, names)
        except ValueError as exc:
            raise RunFolderError(f"{path}: {exc}") from None


def read_json_lists(path: str | Path, expected: str, **kinds: type | tuple) -> list[list]:
    """The lists under the keys of `kinds` in the JSON object in `path`, in that order, each
    holding only items of its type (bools are not ints); RunFolderError naming the file and
    `expected` when the file is missing, not JSON, or not of that shape."""
    data = read_json(path, RunFolderError, expected)
    values = [data.get(key) if isinstance(data, dict) else None for key in kinds]
    for value, kind in zip(values, kinds.values()):
        if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
            raise RunFolderError(f"{path} is not {expected}.")
    return values
