"""An on-disk cache of frozen encoder activations, keyed by everything that decides them.

An entry's key hashes a spec (encoder, its frozen weights, cut, transform) and the content of
every input item, so that any change to them makes a new entry. Entries are safetensors files
written atomically under a file lock, so two processes filling the cache at once stay safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from captag.config import cache_root


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


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
        return folder / f"{key[:32]}.safetensors"

    def get_or_compute(self, spec: dict, item_hashes: list[str],
                       compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The cached tensors for (spec, items), computing and storing them on a miss."""
        key = self.key(spec, item_hashes)
        path = self.path(spec, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                self.hits += 1
                return load_file(path)
            self.misses += 1
            tensors = {name: t.contiguous() for name, t in compute().items()}
            self._write(path, tensors, spec)
            return tensors

    @staticmethod
    def _write(path: Path, tensors: dict[str, torch.Tensor], spec: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"spec": json.dumps(spec, sort_keys=True)})
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
