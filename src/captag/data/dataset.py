"""Datasets: records with their images and captions, or cached encoder activations, and the
collate function that turns their items into model batches."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
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


class TokenStates:
    """Token states of rows of different lengths, stored flat without padding: row i is
    `flat[offsets[i]:offsets[i + 1]]`. Indexing gives `text_states` padded with zeros to the
    longest of the rows asked for, with their `attention_mask`."""

    def __init__(self, flat: torch.Tensor, offsets: torch.Tensor):
        self.flat, self.offsets = flat, offsets.long()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        if isinstance(index, int):
            start, end = int(self.offsets[index]), int(self.offsets[index + 1])
            return {"text_states": self.flat[start:end],
                    "attention_mask": torch.ones(end - start, dtype=torch.long)}
        starts = self.offsets[index]
        lengths = self.offsets[index + 1] - starts
        steps = torch.arange(int(lengths.max()))
        mask = steps < lengths[:, None]
        rows = self.flat[torch.where(mask, starts[:, None] + steps, 0)]
        return {"text_states": torch.where(mask[..., None], rows, 0),
                "attention_mask": mask.long()}


class CachedFeatures(Dataset):
    """One item per row of precomputed tensors (encoder activations, or `TokenStates`) with
    its target."""

    def __init__(self, tensors: dict[str, torch.Tensor | TokenStates],
                 targets: np.ndarray | None = None):
        self.tensors = tensors
        self.length = len(next(iter(tensors.values())))
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.float32)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        item = self._take(index)
        item["index"] = index
        if self.targets is not None:
            item["target"] = self.targets[index]
        return item

    def columns(self, indices: Sequence[int]) -> dict:
        """The items at `indices` as one batch: each tensor indexed at once."""
        index = torch.as_tensor(indices)
        columns = self._take(index)
        columns["index"] = index
        if self.targets is not None:
            columns["target"] = self.targets[index]
        return columns

    def _take(self, index) -> dict:
        taken = {}
        for name, tensor in self.tensors.items():
            if isinstance(tensor, TokenStates):
                taken.update(tensor[index])
            else:
                taken[name] = tensor[index]
        return taken


def stack_items(items: list[dict]) -> dict:
    """Items to columns: tensors stacked (rows of token states padded with zeros to the
    longest), other values listed."""
    columns = {}
    for key, first in items[0].items():
        values = [item[key] for item in items]
        if not isinstance(first, torch.Tensor):
            columns[key] = values
        elif first.dim() and len({v.shape for v in values}) > 1:
            columns[key] = pad_sequence(values, batch_first=True)
        else:
            columns[key] = torch.stack(values)
    return columns


class Collate:
    """Stacks items into a model batch; tokenises raw captions (with `tokenize`, a text
    encoder's), trims cached token padding, and mirrors cached image maps with probability `flip`.

    Batch keys: `image` (pixels) or `image_features` (cached frozen image stages), `input_ids`
    or `text_states` (cached frozen text stages) with `attention_mask`, `target` and `index`.
    """

    def __init__(self, tokenize: Callable[[list[str]], dict] | None = None, flip: float = 0.0):
        self.tokenizer = tokenize
        self.flip = flip

    def __call__(self, items: list[dict] | dict) -> dict:
        columns = items if isinstance(items, dict) else stack_items(items)
        batch = {"index": torch.as_tensor(columns["index"])}
        if "target" in columns:
            batch["target"] = columns["target"]
        if "image_features" in columns:
            batch["image_features"] = self._flipped(columns["image_features"].float())
        elif "image" in columns:
            batch["image"] = columns["image"].float()
        if "text_states" in columns:
            states = columns["text_states"]
            if "attention_mask" in columns:
                mask = columns["attention_mask"].long()
                length = int(mask.sum(1).max())
                batch["attention_mask"], states = mask[:, :length], states[:, :length]
            batch["text_states"] = states.float()
        elif self.tokenizer is not None:
            batch.update(self.tokenizer(columns["caption"]))
        return batch

    def _flipped(self, maps: torch.Tensor) -> torch.Tensor:
        """Feature maps mirrored at random (probability `flip`); pooled vectors as they are."""
        if not self.flip or maps.dim() != 4:
            return maps
        flipped = (torch.rand(len(maps)) < self.flip).view(-1, 1, 1, 1)
        return torch.where(flipped, maps.flip(-1), maps)
