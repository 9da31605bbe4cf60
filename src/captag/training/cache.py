"""An on-disk cache of frozen encoder activations, keyed by everything that decides them.

An entry's key hashes a spec (encoder, its frozen weights, cut, transform) and the content of
every input item, so that any change to them makes a new entry. An entry is a folder of `.npy`
arrays: they are preallocated on disk and filled in place as the activations are made, so that
no array is ever gathered whole in memory, and they are read back as memory maps. An entry is
written into a temporary folder and renamed into place under a file lock, so two processes
filling the cache at once stay safe and an interrupted one leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
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


class Entry:
    """A cache entry being written: arrays made on disk, to be filled in place."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.arrays: dict[str, np.memmap] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype) -> np.memmap:
        """A new zero-filled array `name`, memory-mapped from the entry's folder."""
        self.arrays[name] = np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+",
                                                      dtype=dtype, shape=tuple(shape))
        return self.arrays[name]

    def close(self) -> None:
        for array in self.arrays.values():
            array.flush()
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
