"""The torch-free runtime of an exported model folder (`captag export`): `ExportedPredictor`.

It imports numpy, Pillow, onnxruntime, tokenizers and yaml, and only captag's torch-free
modules. Batches flow through a small pipeline: threads decode and resize the images and
tokenise the captions of the next batches while ONNX Runtime runs the current one (Pillow and
tokenizers release the GIL).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import yaml
from PIL import Image
from tokenizers import Tokenizer

from captag.config import PREDICT_BATCH_SIZE
from captag.data.images import open_image
from captag.data.labels import LabelMap
from captag.data.split import load_split
from captag.deploy import MODEL_YAML
from captag.errors import RunFolderError
from captag.evaluation.metrics import load_thresholds
from captag.files import read_json
from captag.data.sources import DataOptions
from captag.models.engines import Runtimes, sigmoid
from captag.inference.inputs import check_inputs, is_single, is_table, results, table_inputs

FORMAT = "captag-export"
FORMAT_VERSION = 1
FILTERS = {"bilinear": Image.Resampling.BILINEAR}


def read_spec(folder: Path) -> dict:
    """model.yaml of an exported folder, checked with the files it names."""
    path = folder / MODEL_YAML
    if not folder.is_dir() or not path.is_file():
        raise RunFolderError(f"{folder} is not an exported model folder: {MODEL_YAML} missing. "
                             "Write one with `captag export RUN_DIR --out DIR`.")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RunFolderError(f"{path} is not valid YAML ({error}).") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise RunFolderError(f"{path} does not describe a captag export (format {FORMAT}).")
    if spec.get("format_version", 0) > FORMAT_VERSION:
        raise RunFolderError(f"{path} has format version {spec['format_version']}; this captag "
                             f"reads version {FORMAT_VERSION} or older: upgrade captag.")
    names = [*spec["graphs"].values(), "labels.json", "thresholds.json"]
    names += [spec["preprocessing"][k] for k in ("tokenizer", "token_map")
              if spec["preprocessing"].get(k)]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise RunFolderError(f"{folder} is an incomplete export: {', '.join(missing)} missing. "
                             "Export the run again.")
    return spec


def preprocess_image(image: Image.Image, size: int, mean, std, resample=FILTERS["bilinear"]):
    """The evaluation transform: a square resize (Pillow), /255, normalise; CHW float32."""
    pixels = np.asarray(image.resize((size, size), resample), dtype=np.float32) / 255.0
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return pixels.transpose(2, 0, 1)


def load_tokenizer(path: Path, max_length: int, pad_id: int, pad_token: str) -> Tokenizer:
    """The exported tokenizer, truncating to `max_length` and padding to the longest caption."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def default_threads() -> tuple[int, int]:
    """(ONNX Runtime intra-op threads, decode threads) for this machine's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(cores or 1, 1), max(min((cores or 1) // 2, 4), 1)


class ExportedPredictor:
    """Label probabilities from an exported folder, with the interface of the run folder's
    `Predictor`: `load`, `predict`, `predict_probs`, `labels`, `threshold`, `info()`."""

    @classmethod
    def load(cls, path, threads: int | None = None, decode_threads: int | None = None,
             fast_decode: bool = False, runtime: str | None = None,
             precision: str | None = None) -> "ExportedPredictor":
        """`threads`: the runtime's intra-op threads, `decode_threads`: threads preparing the
        next batches (defaults: by the cores); `fast_decode`: decode JPEGs at a reduced scale
        (at least the model's image size; faster, probabilities differ slightly); `runtime`
        and `precision`: how the graphs run (`captag.models.engines`; auto: the fastest on
        this machine within tolerance of fp32)."""
        return cls(path, threads, decode_threads, fast_decode, runtime, precision)

    def __init__(self, path, threads: int | None = None, decode_threads: int | None = None,
                 fast_decode: bool = False, runtime: str | None = None, precision: str | None = None):
        self.path = Path(path)
        self.fast_decode = fast_decode
        self.spec = read_spec(self.path)
        self.labels = LabelMap.load(self.path / "labels.json")
        self.threshold = load_thresholds(self.path / "thresholds.json")
        pre = self.spec["preprocessing"]
        self.at_least_one = bool(pre["at_least_one"])
        self.data_settings = dict(self.spec.get("data") or {})  # how its training data was read
        cores_threads, cores_decode = default_threads()
        self.threads, self.decode_threads = threads or cores_threads, decode_threads or cores_decode
        graphs = self.spec["graphs"]
        self.graphs = Runtimes({part: self.path / name for part, name in graphs.items()},
                               runtime, precision, self.threads, spin=False)
        self.has_image, self.has_text = "image" in graphs, "text" in graphs
        self.tokenizer = self.token_map = None
        if self.has_text:
            self.tokenizer = load_tokenizer(self.path / pre["tokenizer"], pre["max_length"],
                                            pre["pad_id"], pre["pad_token"])
            if pre.get("token_map"):
                self.token_map = np.load(self.path / pre["token_map"])

    # --- one batch -------------------------------------------------------------------------

    def _pixels(self, sources: Sequence, names: Sequence[str]) -> np.ndarray:
        pre = self.spec["preprocessing"]
        size, resample = pre["image_size"], FILTERS[pre["resize_filter"]]
        draft = size if self.fast_decode else None
        return np.stack([preprocess_image(open_image(s, n, draft), size, pre["mean"], pre["std"],
                                          resample) for s, n in zip(sources, names)])

    def _tokens(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        encoded = self.tokenizer.encode_batch(list(captions))
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        return (self.token_map[ids] if self.token_map is not None else ids), mask

    def _prepare(self, sources, names, captions) -> dict:
        """The model's inputs for one batch (run in a decode thread)."""
        batch = {}
        if self.has_image:
            batch["image"] = self._pixels(sources, names)
        if self.has_text:
            batch["input_ids"], batch["attention_mask"] = self._tokens(captions)
        return batch

    def _probs(self, batch: dict, graphs=None) -> np.ndarray:
        """Probabilities of one batch, its graphs run by `graphs` (default: the chosen ways,
        chosen on this batch when that is pending)."""
        if graphs is None and not self.graphs.ready:
            self.graphs.choose(lambda runners: self._probs(batch, runners))
        graphs = graphs or self.graphs
        parts = {}
        if self.has_image:
            parts["image_features"] = graphs["image"]({"image": batch["image"]})
        if self.has_text:
            feeds = {k: batch[k] for k in ("input_ids", "attention_mask")}
            parts["text_features"] = graphs["text"](feeds)
        logits = graphs["head"](parts)
        return sigmoid(logits)

    # --- the pipeline ----------------------------------------------------------------------

    def _prepared(self, sources, names, captions, batch_size: int, threads: int) -> Iterator[dict]:
        """Each batch's inputs in order; up to `threads` + 1 next batches are prepared in
        threads while the caller runs the model on the current one."""
        with ThreadPoolExecutor(threads) as pool:
            pending = deque()
            for start in range(0, len(captions), batch_size):
                window = slice(start, start + batch_size)
                pending.append(pool.submit(self._prepare, sources[window], names[window],
                                           captions[window]))
                if len(pending) > threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _run(self, sources, names, captions, batch_size: int, threads: int | None = None,
             progress: bool = False) -> np.ndarray:
        """Probabilities in the order given; batches go by caption length (less padding)."""
        if len(captions) <= batch_size:  # one batch: no thread to hand it to
            return self._probs(self._prepare(sources, names, captions))
        order = np.argsort([len(c) for c in captions], kind="stable")
        sources, names, captions = ([seq[i] for i in order] for seq in (sources, names, captions))
        batches = self._prepared(sources, names, captions, batch_size,
                                 threads or self.decode_threads)
        if progress:
            from tqdm.auto import tqdm
            batches = tqdm(batches, total=-(-len(captions) // batch_size), desc="predict")
        probs = np.concatenate([self._probs(batch) for batch in batches])
        return probs[np.argsort(order)]

    def predict_probs(self, records, image_dir, batch_size: int = PREDICT_BATCH_SIZE,
                      num_workers: int | None = None, progress: bool = True) -> np.ndarray:
        """Probabilities [rows, labels] for records (image ID and caption) in `image_dir`."""
        folder = Path(image_dir or ".")
        sources = [folder / r.image_id for r in records] if self.has_image else [None] * len(records)
        names = [r.image_id for r in records]
        captions = [r.caption for r in records]
        if not records:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self._run(sources, names, captions, batch_size, num_workers, progress)

    def predict(self, images=None, captions=None, batch_size: int = PREDICT_BATCH_SIZE,
                options: DataOptions | None = None):
        """Labels and probabilities for one image and its caption, for lists of them, or for
        the rows of a DataFrame, a list of dicts or a data file (see
        `captag.inference.predictor.Predictor.predict`)."""
        if is_table(images, captions):
            images, captions = table_inputs(images, self.data_settings, options)
            return self.predict(images, captions, batch_size)
        single = is_single(images, captions)
        images, captions = check_inputs(images, captions, self.has_image, self.has_text)
        names = [f"image {i}" for i in range(len(captions))]
        probs = self._run(images, names, captions, batch_size)
        answers = results(probs, self.labels, self.threshold, self.at_least_one)
        return answers[0] if single else answers

    def caption_truncated(self, caption: str) -> bool:
        """Whether the model reads only the first `max_length` tokens of the caption."""
        return self.has_text and bool(self.tokenizer.encode(caption).overflowing)

    # --- what it is ------------------------------------------------------------------------

    def load_split(self) -> tuple[list[str], list[str]]:
        """(train IDs, validation IDs) of the run the folder was exported from."""
        path = self.path / "split.json"
        if not path.is_file():
            raise RunFolderError(f"{self.path} keeps no split.json: its run had none, so "
                                 "--split cannot be used; evaluate without it.")
        return load_split(path)

    @property
    def engine(self) -> str:
        """The runtime of the first graph (image, else text): onnxruntime or openvino ("auto"
        until its first batch has chosen)."""
        return self.graphs.runtime

    def info(self) -> dict:
        """What the model is: labels, thresholds, sizes and where it comes from (the keys of
        the run folder's `Predictor.info`)."""
        spec, sizes = self.spec, self.spec["sizes"]
        return {
            "format": f"{FORMAT}/{spec['format_version']}", "path": str(self.path),
            "model": {**spec["model"], "engine": self.engine, "runtimes": self.graphs.describe(),
                      "int8": spec["provenance"]["int8"], "graphs": spec["graphs"],
                      "inputs": spec["inputs"]},
            "labels": self.labels.as_list(), "threshold": self.threshold,
            "at_least_one": self.at_least_one,
            "thresholds": read_json(self.path / "thresholds.json", RunFolderError, "a JSON object"),
            "sizes": {**sizes, "model_file_mb": sizes.get("folder_mb", sizes["model_mb"]),
                      "image_size": spec["preprocessing"].get("image_size"),
                      "max_caption_tokens": spec["preprocessing"].get("max_length", 0)},
            "preprocessing": spec["preprocessing"],
            "provenance": {"kind": "exported folder", **spec["provenance"]},
        }
