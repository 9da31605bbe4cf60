"""Inference from a run folder: label probabilities for records, through ONNX Runtime or PyTorch.

The first prediction exports the run's model to `model.onnx` beside its weights (or, when the
run folder is read-only, to the cache: CAPTAG_CACHE/onnx/<digest of model and config>.onnx);
ONNX Runtime runs it about twice as fast as eager PyTorch on a CPU. On a GPU, or without
onnxruntime, PyTorch runs it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm  # not tqdm.auto: it iterates a DataLoader twice (two sets of workers)

import captag
from captag.config import PREDICT_BATCH_SIZE, cache_root
from captag.data.dataset import CaptionedImages, Collate
from captag.data.images import open_image
from captag.data.records import Record
from captag.data.sources import DataOptions, remembered
from captag.data.transforms import build_transform
from captag.errors import ConfigError, RunFolderError
from captag.evaluation.size import file_mb, parameter_count, parameter_mb
from captag.files import read_json
from captag.inference.inputs import check_inputs, is_single, is_table, results, table_inputs
from captag.models import engines, onnx
from captag.models.fusion import FusionModel, model_inputs, probabilities
from captag.runs import RunFolder

log = logging.getLogger(__name__)


class _Exportable(nn.Module):
    """The model with plain positional tensor inputs, for ONNX export."""

    def __init__(self, model: FusionModel):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        inputs = list(inputs)
        image = inputs.pop(0) if self.model.image is not None else None
        ids, mask = (inputs[0], inputs[1]) if self.model.text is not None else (None, None)
        return self.model(image=image, input_ids=ids, attention_mask=mask)


def input_names(model: FusionModel) -> list[str]:
    names = ["image"] if model.image is not None else []
    return names + (["input_ids", "attention_mask"] if model.text is not None else [])


def example_inputs(model: FusionModel, image_size: int) -> list[torch.Tensor]:
    """Inputs of the shapes `input_names` names, for tracing the model."""
    example = []
    if model.image is not None:
        example.append(torch.zeros(2, 3, image_size, image_size))
    if model.text is not None:
        example += [torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)]
    return example


def onnx_target(run: RunFolder) -> tuple[Path, bool]:
    """Where the run's ONNX graph is (or goes), and whether it is there and up to date:
    model.onnx in the run folder, or in the cache when the run folder is not writable."""
    local = run.onnx
    if local.exists() and local.stat().st_mtime >= run.model.stat().st_mtime:
        return local, True
    if run.is_writable():
        return local, False
    cached = cache_root() / "onnx" / f"{run.fingerprint()}.onnx"
    return cached, cached.exists()


class Predictor:
    """Label probabilities from a run folder's model for any list of records.

    Building one checks the whole run folder (RunFolderError naming a bad file) and loads the
    model, its labels and threshold; nothing is exported or run until `predict_probs`."""

    @classmethod
    def load(cls, path: str | Path, engine: str = "auto", device: str = "cpu",
             image_size: int | None = None, runtime: str | None = None,
             precision: str | None = None) -> "Predictor":
        """The predictor of a run folder (checked whole first)."""
        return cls(path, engine, device, image_size, runtime, precision)

    def __init__(self, run_dir: str | Path, engine: str = "auto", device: str = "cpu",
                 image_size: int | None = None, runtime: str | None = None, precision: str | None = None):
        """`image_size` scores the images at another side than the run trained at (FixRes:
        train low, test high); the run's ONNX graph has a fixed side, so it runs on torch.
        `runtime` and `precision` say how the ONNX graph runs (`captag.models.engines`)."""
        self.run = RunFolder(run_dir)
        self.run.check()
        self.cfg = self.run.load_config()
        self.labels = self.run.load_labels()
        self.threshold = self.run.load_threshold()
        self.model = self.run.load_model().to(device)
        self.device = device
        self.image_size = self.cfg.update(image_size=image_size).image_size  # checked; None: the run's
        same_size = self.image_size == self.cfg.image_size
        if engine == "onnx" and not same_size:
            raise ConfigError(f"--image-size {self.image_size} needs --engine torch or auto: the "
                              f"run's ONNX graph takes {self.cfg.image_size} px images.")
        self.use_onnx = (engine in ("auto", "onnx") and device == "cpu" and onnx.available()
                         and same_size)
        self.runtime, self.precision = runtime, precision
        engines.candidates(runtime, precision)  # a runtime this machine lacks stops here
        self.data_settings = remembered(self.cfg)  # how its training data was read
        self._graphs = None

    @property
    def engine(self) -> str:
        """torch, or the ONNX graph's runtime (onnxruntime or openvino; "auto" until the first
        batch has chosen)."""
        if not self.use_onnx:
            return "torch"
        return "auto" if self._graphs is None else self._graphs.runtime

    @property
    def has_image(self) -> bool:
        return self.model.image is not None

    @property
    def at_least_one(self) -> bool:
        return self.cfg.at_least_one

    def load_split(self) -> tuple[list[str], list[str]]:
        """(train IDs, validation IDs) of the run."""
        return self.run.load_split()

    def caption_truncated(self, caption: str) -> bool:
        """Whether the model reads only the first `max_length` tokens of the caption."""
        text = self.model.text
        if text is None:
            return False
        return len(text.tokenizer(caption, truncation=False)["input_ids"]) > text.max_length

    def info(self) -> dict:
        """What the model is: labels, thresholds, sizes and where it comes from (the keys of
        `ExportedPredictor.info`)."""
        cfg, run = self.cfg, self.run
        return {
            "format": "run", "path": str(run.path),
            "model": {"name": cfg.model, "image_encoder": cfg.image_encoder,
                      "text_encoder": cfg.text_encoder, "engine": self.engine, "int8": False,
                      "runtimes": self._graphs.describe() if self._graphs else {}},
            "labels": self.labels.as_list(), "threshold": self.threshold,
            "at_least_one": cfg.at_least_one,
            "thresholds": read_json(run.thresholds, RunFolderError, "a JSON object"),
            "sizes": {"model_mb": round(file_mb(run.model), 2),
                      "model_file_mb": round(file_mb(run.model), 1),
                      "parameters": parameter_count(self.model),
                      "parameter_mb_fp32": round(parameter_mb(self.model), 2),
                      "image_size": self.image_size if self.has_image else None,
                      "max_caption_tokens": self.model.text.max_length if self.model.text else 0},
            "provenance": {"kind": "run folder", "run": str(run.path),
                           "val_f1_samples": run.load_val_f1(),
                           "captag_version": captag.__version__},
        }

    def _onnx_graphs(self) -> engines.Runtimes:
        if self._graphs is None:
            path, fresh = onnx_target(self.run)
            if not fresh:
                log.info("Exporting %s to %s", self.run.model, path)
            names = input_names(self.model)
            tokens = {name: {1: "tokens"} for name in ("input_ids", "attention_mask") if name in names}
            onnx.exported(_Exportable(self.model), example_inputs(self.model, self.cfg.image_size),
                          path, names, "logits", tokens, fresh=fresh)
            self._graphs = engines.Runtimes({"model": path}, self.runtime, self.precision,
                                            torch.get_num_threads())
        return self._graphs

    def _transform(self):
        """The evaluation transform of the image encoder (None without one)."""
        image = self.model.image
        if image is None:
            return None
        return build_transform(self.image_size, image.mean, image.std, train=False)

    def _loader(self, records, image_dir, batch_size: int, num_workers: int) -> DataLoader:
        image, text = self.model.image, self.model.text
        data = CaptionedImages(records, image_dir or ".", self._transform(),
                               with_images=image is not None)
        workers = num_workers if image is not None else 0
        return DataLoader(data, batch_size=batch_size, num_workers=workers,
                          collate_fn=Collate(text.tokenize if text is not None else None))

    def _logits(self, batch: dict):
        if self.use_onnx:
            feeds = {name: batch[name].numpy() for name in input_names(self.model)}
            graphs = self._onnx_graphs()
            if not graphs.ready:  # "auto": chosen on this batch
                graphs.choose(lambda runners: engines.sigmoid(runners["model"](feeds)))
            return graphs["model"](feeds)
        return self.model(**{k: v.to(self.device) for k, v in model_inputs(batch).items()}).cpu()

    def predict_probs(self, records: Sequence[Record], image_dir: str | Path | None,
                      batch_size: int = PREDICT_BATCH_SIZE, num_workers: int = 1,
                      progress: bool = True) -> np.ndarray:
        if self.use_onnx:
            self._onnx_graphs()  # export (once) outside inference mode
        batches = tqdm(self._loader(records, image_dir, batch_size, num_workers),
                       desc="predict", disable=not progress)
        return probabilities(self._logits, batches)

    def predict(self, images=None, captions=None, batch_size: int = PREDICT_BATCH_SIZE,
                options: DataOptions | None = None):
        """Labels and probabilities for one image and its caption, for lists of them, or for
        every row of a table.

        An image is a path, the bytes of an image file, or a PIL image; a caption is a string.
        A model without an image (or text) encoder needs no images (or captions). One pair gives
        one result, lists give a list of results, each {"labels": [{"id", "name"}],
        "probabilities": {name: p}, "threshold": t}. A pandas DataFrame, a list of dicts or the
        path of a data file (or imagefolder), given alone, gives one result per row: its columns
        are read as the run's training data was, or as `options` (`DataOptions`) say."""
        if is_table(images, captions):
            images, captions = table_inputs(images, self.data_settings, options)
            return self.predict(images, captions, batch_size)
        single = is_single(images, captions)
        images, captions = check_inputs(images, captions, self.has_image,
                                        self.model.text is not None)
        probs = np.concatenate([self._batch_probs(images[i:i + batch_size],
                                                  captions[i:i + batch_size])
                                for i in range(0, len(captions), batch_size)])
        answers = results(probs, self.labels, self.threshold, self.cfg.at_least_one)
        return answers[0] if single else answers

    def _batch_probs(self, images: list, captions: list[str]) -> np.ndarray:
        batch = {}
        if self.model.image is not None:
            transform = self._transform()
            batch["image"] = torch.stack([transform(open_image(source, f"image {i}"))
                                          for i, source in enumerate(images)])
        if self.model.text is not None:
            batch.update(self.model.text.tokenize(captions))
        if self.use_onnx:
            self._onnx_graphs()
        return probabilities(self._logits, [batch])
