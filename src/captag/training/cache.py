"""An on-disk cache of frozen encoder activations, keyed by everything that decides them.

An entry's key hashes a spec (encoder, its frozen weights, cut, transform) and the content of
every input item, so that any change to them makes a new entry. An entry is a folder of `.npy`
arrays: they are preallocated on disk and filled in place as the activations are made, written
through the file rather than mapped (so that neither the array nor the pages written stay in
the process's memory, however many rows), and they are read back as memory maps. An entry is
written into a temporary folder and renamed into place under a file lock, so two processes
filling the cache at once stay safe and an interrupted one leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from filelock import FileLock

from captag.config import cache_root


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


class ArrayFile:
    """A new zero-filled `.npy` file of `shape` and `dtype`, filled by rows:
    `array[start:stop] = rows` writes them at their place in the file."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = self.dtype.itemsize * math.prod(self.shape[1:])
        self.file = open(path, "wb")
        np.lib.format.write_array_header_1_0(self.file, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
            "shape": self.shape})
        self.start = self.file.tell()
        self.file.truncate(self.start + self.row_bytes * self.shape[0])

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, rows: slice | list[int], values) -> None:
        """Write `values` at a slice of rows, or at a list of rows (one value each)."""
        if not isinstance(rows, slice):
            for row, value in zip(rows, values, strict=True):
                self[row:row + 1] = value[None]
            return
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("an ArrayFile is written by contiguous rows")
        values = np.ascontiguousarray(np.broadcast_to(values, (stop - start, *self.shape[1:])),
                                      dtype=self.dtype)
        self.file.seek(self.start + start * self.row_bytes)
        self.file.write(values.data)

    def close(self) -> None:
        self.file.close()


class Entry:
    """A cache entry being written: arrays made on disk, to be filled in place."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.arrays: dict[str, ArrayFile] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype) -> ArrayFile:
        """A new zero-filled array `name` in the entry's folder, to fill by rows."""
        self.arrays[name] = ArrayFile(self.folder / f"{name}.npy", shape, dtype)
        return self.arrays[name]

    def close(self) -> None:
        for array in self.arrays.values():
            array.close()
        self.arrays.clear()


def read_entry(folder: Path) -> dict[str, torch.Tensor]:
    """An entry's arrays as tensors over copy-on-write memory maps of its files."""
    return {path.stem: torch.from_numpy(np.load(path, mmap_mode="c"))
            for path in sorted(folder.glob("*.npy"))}


class FeatureCache:
    """Stores dicts of tensors under keys; counts hits and misses."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else cache_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def key(self, spec: dict, item_hashes: list[str]) -> str:
        return digest(json.dumps(spec, sort_keys=True), *item_hashes)

    def path(self, spec: dict, key: str) -> Path:
        folder = self.root / str(spec.get("kind", "features")) / str(spec.get("name", "any")).replace("/", "--")
        return folder / key[:32]

    def get_or_compute(self, spec: dict, item_hashes: list[str],
                       compute: Callable[[Entry], None]) -> dict[str, torch.Tensor]:
        """The cached tensors for (spec, items); on a miss, `compute` first fills a new entry
        with the arrays it makes (`Entry.array`)."""
        key = self.key(spec, item_hashes)
        path = self.path(spec, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.is_dir():
                self.hits += 1
            else:
                self.misses += 1
                self._write(path, compute, spec)
        return read_entry(path)

    @staticmethod
    def _write(path: Path, compute: Callable[[Entry], None], spec: dict) -> None:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, suffix=".tmp"))
        try:
            entry = Entry(tmp)
            compute(entry)
            entry.close()
            (tmp / "spec.json").write_text(json.dumps(spec, sort_keys=True))
            tmp.chmod(0o755)
            publish(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, path: Path) -> None:
    """Rename a finished entry into place (one step: the entry is there whole, or not at all)."""
    tmp.rename(path)
