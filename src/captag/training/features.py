"""Run the frozen lower stages of each encoder once over a dataset, and cache what they give.

Image activations come from an ONNX graph when ONNX Runtime is installed (about 2x faster than
eager PyTorch on a CPU), else from PyTorch. The graph runs under ONNX Runtime or OpenVINO, in
fp32 or bf16, as `--feature-runtime` and `--feature-precision` allow and its first batch
chooses (`captag.models.engines`); bf16 is kept only within FEATURE_TOLERANCE of fp32. Text activations are token states (or pooled vectors
when the whole text encoder is frozen), stored without padding, one caption's tokens after
another. Each batch goes into the cache entry's arrays on disk as soon as it is made (see
`training.cache`). Image batches are small (16): ONNX Runtime's memory grows with the batch
(about 0.9 GiB at 16 images of 320 px, 3.4 GiB at 64) while its speed does not.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm  # not tqdm.auto: it iterates a DataLoader twice (two sets of workers)

from captag.data.dataset import CaptionedImages, TokenStates
from captag.data.images import file_state
from captag.data.records import Record
from captag.data.transforms import build_transform, describe
from captag.models.fusion import FusionModel, encoder_stages
from captag.training.cache import Entry, FeatureCache, digest

log = logging.getLogger(__name__)
CACHE_VERSION = "2"
# the largest change of the image activations, relative to their norm, that a faster way to
# compute them may make against fp32. OpenVINO bf16 changes the default's by 0.049, and
# training on them gave validation samples-F1 0.8967 against 0.8964 on fp32 ones (README).
FEATURE_TOLERANCE = 0.1


_HASHES: dict[tuple, str] = {}  # file_state -> content hash, for this process


def file_hashes(paths: Sequence[Path]) -> list[str]:
    """The SHA-1 of each file's content; unchanged files are hashed once per process."""
    def one(path: Path) -> str:
        state = file_state(Path(path))
        if state not in _HASHES:
            _HASHES[state] = hashlib.sha1(Path(path).read_bytes()).hexdigest()
        return _HASHES[state]
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, paths))


def weights_fingerprint(modules: Sequence[nn.Module]) -> str:
    """A hash of every parameter and buffer of the given modules."""
    parts = []
    for module in modules:
        for name, tensor in module.state_dict().items():
            parts += [name, tensor.detach().cpu().contiguous().numpy().tobytes()]
    return digest(*parts)


class _ImageLower(nn.Module):
    def __init__(self, encoder, cut: int):
        super().__init__()
        self.encoder, self.cut = encoder, cut

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.encoder.lower(images, self.cut)
        return self.encoder.pool(h) if self.cut >= self.encoder.num_stages else h


def _image_runner(lower: _ImageLower, example: torch.Tensor, onnx_path: Path, engine: str,
                  ways: dict, first_batch: Callable[[], torch.Tensor], store: Path):
    """A function from a batch of images to their activations, and its precision (fp32 or
    bf16): an ONNX graph run the way `ways` (runtime, precision) allow and the first batch
    chooses (`captag.models.engines`), else PyTorch."""
    from captag.models import engines, onnx
    if engine in ("auto", "onnx") and example.device.type == "cpu":
        path = onnx.exported(lower, (example,), onnx_path, ["x"])
        if path is not None:
            graphs = engines.Runtimes({"image": path}, threads=torch.get_num_threads(),
                                      store=store, **ways)
            if not graphs.ready:
                x = first_batch().numpy()
                graphs.choose(lambda runners: runners["image"]({"x": x}),
                              engines.relative_change, FEATURE_TOLERANCE)
            run, way = graphs["image"], graphs.chosen["image"]
            log.info("image features: %s", way)
            return (lambda x: torch.from_numpy(run({"x": x.numpy()}))), way.precision
    return (lambda x: lower(x.to(memory_format=torch.channels_last))), "fp32"


def _stack_images(items: list[dict]) -> torch.Tensor:
    return torch.stack([item["image"] for item in items])


def _first_images(records: Sequence[Record], image_dir: Path, transform) -> torch.Tensor:
    data = CaptionedImages(records, image_dir, transform)
    return _stack_images([data[i] for i in range(len(data))])


def image_activations(model: FusionModel, records: Sequence[Record], image_dir: Path,
                      image_size: int, cache: FeatureCache, batch_size: int = 16,
                      num_workers: int = 1, engine: str = "auto", progress: bool = True,
                      runtime: str | None = None, precision: str | None = None):
    """Activations of the image encoder's frozen stages for every record (float16), computed
    the fastest way `runtime` and `precision` allow (see `_image_runner`); bf16 activations
    are cached apart from fp32 ones."""
    encoder, cut = model.image, model.image_cut
    transform = build_transform(image_size, encoder.mean, encoder.std, train=False)
    spec = {"kind": "image", "name": encoder.name, "cut": cut, "version": CACHE_VERSION,
            "weights": weights_fingerprint(encoder_stages(encoder)[:cut]),
            "transform": describe(transform)}
    paths = [Path(image_dir) / r.image_id for r in records]
    lower = _ImageLower(encoder, cut).eval()
    onnx_path = cache.root / "onnx" / f"{digest(str(sorted(spec.items())))[:32]}.onnx"
    first = functools.partial(_first_images, records[:batch_size], image_dir, transform)
    run, way_precision = _image_runner(
        lower, torch.zeros(2, 3, image_size, image_size), onnx_path, engine,
        {"runtime": runtime, "precision": precision}, first, cache.root / "runtimes.json")
    if way_precision != "fp32":
        spec["precision"] = way_precision

    def compute(entry: Entry) -> None:
        data = CaptionedImages(records, image_dir, transform)
        loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers,
                            collate_fn=_stack_images)
        out, done = None, 0
        with torch.inference_mode():
            for images in tqdm(loader, desc=f"image features ({encoder.name})", disable=not progress):
                batch = run(images).to(torch.float16).numpy()
                if out is None:
                    out = entry.array("image", (len(records), *batch.shape[1:]), np.float16)
                out[done:done + len(batch)] = batch
                done += len(batch)

    return cache.get_or_compute(spec, file_hashes(paths), compute)["image"]


def text_activations(model: FusionModel, captions: Sequence[str], cache: FeatureCache,
                     batch_size: int = 128, progress: bool = True) -> dict:
    """Token states after the text encoder's frozen stages (`text_states`: `TokenStates`, which
    give each row's states with their `attention_mask`), or pooled vectors (`text_states`, a
    tensor) if all its stages are frozen."""
    encoder, cut = model.text, model.text_cut
    pooled = cut >= encoder.num_stages
    spec = {"kind": "text", "name": encoder.name, "cut": cut, "version": CACHE_VERSION,
            "max_length": encoder.max_length,
            "weights": weights_fingerprint(encoder_stages(encoder)[:cut])}
    hashes = [hashlib.sha1(c.encode()).hexdigest() for c in captions]

    def compute(entry: Entry) -> None:
        tokens = encoder.tokenize(list(captions))
        lengths = tokens["attention_mask"].sum(1)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
        if pooled:
            states = entry.array("text", (len(captions), encoder.feature_dim), np.float16)
        else:
            states = entry.array("text", (int(offsets[-1]), encoder.feature_dim), np.float16)
            entry.array("text_offsets", offsets.shape, np.int64)[:] = offsets.numpy()
            bounds = offsets.tolist()
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), batch_size), disable=not progress,
                              desc=f"text features ({encoder.name})"):
                rows = order[start:start + batch_size]
                n = int(lengths[rows].max())
                ids, mask = tokens["input_ids"][rows, :n], tokens["attention_mask"][rows, :n]
                if pooled:
                    states[rows] = encoder(ids, mask).to(torch.float16).numpy()
                    continue
                out = encoder.lower(ids, mask, cut).to(torch.float16).numpy()
                for j, i in enumerate(rows):
                    states[bounds[i]:bounds[i + 1]] = out[j, :bounds[i + 1] - bounds[i]]

    stored = cache.get_or_compute(spec, hashes, compute)
    if pooled:
        return {"text_states": stored["text"]}
    return {"text_states": TokenStates(stored["text"], stored["text_offsets"])}

