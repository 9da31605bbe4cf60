"""Datasets: records with their images and captions, or cached encoder activations."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from captag.data.images import load_image
from captag.data.records import Record


class CaptionedImages(Dataset):
    """One item per record: the transformed image, the caption, and the multi-hot target."""

    def __init__(self, records: Sequence[Record], image_dir: str | Path,
                 transform: Callable | None, targets: np.ndarray | None = None,
                 with_images: bool = True):
        self.records = list(records)
        self.image_dir = Path(image_dir)
        self.transform = transform
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.float32)
        self.with_images = with_images

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        item = {"index": index, "caption": record.caption}
        if self.with_images:
            image = load_image(self.image_dir / record.image_id)
            item["image"] = self.transform(image) if self.transform else image
        if self.targets is not None:
            item["target"] = self.targets[index]
        return item


class CachedFeatures(Dataset):
    """One item per row of precomputed tensors (encoder activations) with its target."""

    def __init__(self, tensors: dict[str, torch.Tensor], targets: np.ndarray | None = None):
        self.tensors = tensors
        self.length = len(next(iter(tensors.values())))
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.float32)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        item = {name: tensor[index] for name, tensor in self.tensors.items()}
        item["index"] = index
        if self.targets is not None:
            item["target"] = self.targets[index]
        return item

    def columns(self, indices: Sequence[int]) -> dict:
        """The items at `indices` as one batch: each tensor indexed at once."""
        index = torch.as_tensor(indices)
        columns = {name: tensor[index] for name, tensor in self.tensors.items()}
        columns["index"] = index
        if self.targets is not None:
            columns["target"] = self.targets[index]
        return columns
