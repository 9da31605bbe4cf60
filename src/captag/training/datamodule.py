"""The LightningDataModule: cached activations of the frozen stages, or images and captions.

For each encoder, when its lower stages are frozen their activations come from the feature
cache; when it is trained whole, the raw input comes with the seed's augmentation.

Under DDP the work is shared the Lightning way: `prepare_data` runs on one process per node
(local rank 0), which checks the images, splits the records and fills the feature cache;
Lightning then holds every process at a barrier, and `setup` runs on each of them, reading the
split (from the run folder) and the cached activations. Both keep the random state as they
found it, so a warm or a cold cache gives the same run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch.utils.data import DataLoader, Dataset, Sampler

from captag.data.dataset import CachedFeatures, CaptionedImages, Collate
from captag.data.labels import LabelMap
from captag.data.records import Record
from captag.data.transforms import build_transform
from captag.models.fusion import FusionModel
from captag.training.cache import FeatureCache
from captag.training.features import image_activations, text_activations


class EpochSampler(Sampler[int]):
    """A shuffle that depends only on (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class Joined(Dataset):
    """Items of several datasets of the same length, merged key by key.

    When every part can give whole batches as columns (cached features), a batch is fetched
    as columns in one indexing step instead of item by item."""

    def __init__(self, *parts: Dataset):
        self.parts = [p for p in parts if p is not None]

    def __len__(self) -> int:
        return len(self.parts[0])

    def __getitem__(self, index: int) -> dict:
        item = {}
        for part in self.parts:
            item.update(part[index])
        return item

    def __getitems__(self, indices: list[int]) -> dict | list[dict]:
        if not all(hasattr(part, "columns") for part in self.parts):
            return [self[i] for i in indices]
        columns = {}
        for part in self.parts:
            columns.update(part.columns(indices))
        return columns


class Splitter(Protocol):
    """Where the train and validation records come from."""

    def prepare(self) -> tuple[list[Record], list[Record]]:
        """Check and split the records (on the process that prepares the data)."""

    def load(self) -> tuple[list[Record], list[Record]]:
        """The split that `prepare` made, read back (on the other processes)."""


class CaptagDataModule(L.LightningDataModule):
    """Train and validation data for one run; `splitter` gives the records of each split."""

    def __init__(self, cfg, model: FusionModel, splitter: Splitter, labels: LabelMap,
                 image_dir: Path, cache: FeatureCache, progress: bool = True):
        super().__init__()
        self.cfg, self.model, self.splitter, self.labels = cfg, model, splitter, labels
        self.records: dict[str, list[Record]] = {}
        self.targets: dict[str, np.ndarray] = {}
        self.image_dir, self.cache, self.progress = Path(image_dir), cache, progress
        self.datasets: dict[str, Dataset] = {}
        self._cached: dict[str, dict[str, torch.Tensor]] = {}  # filled by prepare_data
        self.seconds = 0.0  # spent checking, splitting and caching

    def prepare_data(self) -> None:
        started = time.perf_counter()
        with isolate_rng():
            self._take(*self.splitter.prepare())
            self._cached = {split: self._cached_inputs(split) for split in self._splits()}
        self.seconds += time.perf_counter() - started

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        started = time.perf_counter()
        if not self.records:
            self._take(*self.splitter.load())
        with isolate_rng():
            for split in self._splits():
                self.datasets[split] = self._build(split)
        self.seconds += time.perf_counter() - started

    def _take(self, train: Sequence[Record], val: Sequence[Record]) -> None:
        self.records = {"train": list(train), "val": list(val)}
        self.targets = {k: self.labels.encode_many([r.labels for r in v])
                        for k, v in self.records.items()}

    def _splits(self) -> list[str]:
        return [split for split in ("train", "val") if self.records[split]]

    def _cached_inputs(self, split: str) -> dict[str, torch.Tensor]:
        """The activations of the frozen stages for the split's records, from the cache."""
        records, cached = self.records[split], {}
        if self.model.image is not None and self.model.image_cut > 0:
            cached["image_features"] = image_activations(
                self.model, records, self.image_dir, self.cfg.image_size, self.cache,
                num_workers=self.cfg.num_workers, progress=self.progress,
                runtime=self.cfg.feature_runtime, precision=self.cfg.feature_precision)
        if self.model.text is not None and self.model.text_cut > 0:
            cached.update(text_activations(self.model, [r.caption for r in records], self.cache,
                                           progress=self.progress))
        return cached

    def _build(self, split: str) -> Dataset:
        records, targets = self.records[split], self.targets[split]
        cached = self._cached.pop(split, None)
        cached = self._cached_inputs(split) if cached is None else cached
        raw_images = self.model.image is not None and self.model.image_cut == 0
        raw = None
        if raw_images or (self.model.text is not None and self.model.text_cut == 0):
            raw = CaptionedImages(records, self.image_dir, self._transform(split == "train"),
                                  with_images=raw_images)
        features = CachedFeatures(cached, targets) if cached else None
        if features is None:
            raw.targets = torch.as_tensor(targets, dtype=torch.float32)
        return Joined(raw, features)

    def _transform(self, train: bool):
        encoder = self.model.image
        if encoder is None:
            return None
        return build_transform(self.cfg.image_size, encoder.mean, encoder.std, train=train,
                               hflip=self.cfg.hflip, rotation=self.cfg.rotation)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.datasets[split]
        sampler = EpochSampler(len(data), self.cfg.seed) if shuffle else None
        raw_images = self.model.image is not None and self.model.image_cut == 0
        workers = self.cfg.num_workers if raw_images else 0
        flip = self.cfg.feature_flip if shuffle else 0.0
        return DataLoader(data, batch_size=self.cfg.batch_size, sampler=sampler,
                          num_workers=workers, persistent_workers=False,
                          collate_fn=Collate(self._tokenize(), flip))

    def _tokenize(self):
        return self.model.text.tokenize if self.model.text is not None else None

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if "val" in self.datasets else []
