"""The run folder: what a run writes, and how a later command loads the model back from it alone.

    config.yaml       resolved settings            labels.json     the label map
    split.json        train and validation keys    thresholds.json tuned decision threshold
    metrics.csv       one row per epoch            summary.json    final validation scores, sizes, times
    model.safetensors best weights (float16)       text_encoder/   text config and tokenizer
    checkpoints/      Lightning checkpoints (best.ckpt, last.ckpt) of the trained part, for resume
    .lock             held by the `train` that writes the folder

`check()` reads every file a later command needs and raises RunFolderError naming the first bad
one, before any data is read or any model is run. A folder "holds a run" once a train saved a
checkpoint or finished (summary.json); anything less is what a failed train left, and a new train
may clear and reuse it.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from captag.config import RunConfig
from captag.data.labels import LabelMap
from captag.data.split import load_split
from captag.errors import CaptagError, ConfigError, DataNotFoundError, OutputError, RunFolderError
from captag.evaluation.metrics import load_thresholds
from captag.files import read_json, replaced, write_json
from captag.models.catalog import check_model
from captag.models.fusion import FusionModel
from captag.models.registry import model_from_config

REQUIRED = ("config.yaml", "labels.json", "thresholds.json", "model.safetensors")
TEXT_PREFIX = "text."  # state-dict keys of the text encoder
TEXT_FILES = ("config.json", "tokenizer_config.json")


class RunFolder:
    """Paths of one run folder; checking, loading and saving what it holds."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.labels = self.path / "labels.json"
        self.split = self.path / "split.json"
        self.thresholds = self.path / "thresholds.json"
        self.metrics = self.path / "metrics.csv"
        self.summary = self.path / "summary.json"
        self.bad_images = self.path / "bad_images.json"
        self.bad_rows = self.path / "bad_rows.json"
        self.model = self.path / "model.safetensors"
        self.onnx = self.path / "model.onnx"
        self.text_encoder = self.path / "text_encoder"
        self.checkpoints = self.path / "checkpoints"
        self.logs = self.path / "logs"
        self.lock_file = self.path / ".lock"

    # --- checks, before any work -----------------------------------------------------------

    def check(self) -> None:
        """Check the whole folder for `evaluate` and `predict`: RunFolderError naming the file."""
        self._check_files()
        self.load_config()
        self.load_labels()
        self.load_threshold()
        self._check_text_encoder(self.weight_names())

    def _check_files(self) -> None:
        if not self.path.is_dir():
            raise RunFolderError(f"Run folder {self.path} does not exist (or is not a folder). "
                                 "Pass a folder written by `captag train --out DIR`.")
        missing = [name for name in REQUIRED if not (self.path / name).is_file()]
        if missing:
            hint = (f"resume it with `captag train --resume {self.path}`" if self.resumable()
                    else "train into it with `captag train --out DIR`")
            raise RunFolderError(f"{self.path} is not a finished captag run folder: "
                                 f"{', '.join(missing)} missing. To finish it, {hint}.")

    def weight_names(self) -> list[str]:
        """The tensor names in model.safetensors' header (the file is checked whole: a
        truncated or corrupt file is a RunFolderError)."""
        try:
            with safe_open(str(self.model), "pt") as handle:
                names = list(handle.keys())
        except (SafetensorError, OSError) as error:
            raise RunFolderError(f"{self.model} is truncated or corrupt ({error}). "
                                 "Copy it again, or train the run again.") from None
        if not names:
            raise RunFolderError(f"{self.model} holds no tensors. Train the run again.")
        return names

    def _check_text_encoder(self, names: list[str]) -> None:
        if not any(name.startswith(TEXT_PREFIX) for name in names):
            return
        missing = [name for name in TEXT_FILES if not (self.text_encoder / name).is_file()]
        if missing:
            raise RunFolderError(
                f"{self.text_encoder}/ is missing or incomplete ({', '.join(missing)} missing): the "
                "model has a text encoder, whose config and tokenizer are saved there. Copy the "
                "whole run folder.")

    # --- loading ---------------------------------------------------------------------------

    def load_config(self) -> RunConfig:
        """The run's settings, with its model and encoder names checked."""
        try:
            cfg = RunConfig.from_yaml(self.config)
            check_model(cfg.model, cfg.image_encoder, cfg.text_encoder)
            return cfg
        except (ConfigError, DataNotFoundError) as error:
            message = str(error)
            if str(self.config) not in message:
                message = f"{self.config}: {message}"
            raise RunFolderError(message) from None

    def load_labels(self) -> LabelMap:
        return _as_run_error(self.labels, LabelMap.load)

    def load_split(self) -> tuple[list[str], list[str]]:
        """(train IDs, validation IDs) of the run."""
        return _as_run_error(self.split, load_split)

    def load_val_f1(self) -> float | None:
        """The final validation samples-F1 in summary.json; None without one."""
        try:
            summary = read_json(self.summary, RunFolderError, "a JSON object")
        except RunFolderError:
            return None
        val = summary.get("val") if isinstance(summary, dict) else None
        return val.get("f1_samples") if isinstance(val, dict) else None

    def load_threshold(self) -> float:
        """The decision threshold: RunFolderError unless each given one is a number in (0, 1)."""
        expected = "a JSON object with a 'threshold' number between 0 and 1"
        data = read_json(self.thresholds, RunFolderError, expected)
        if not isinstance(data, dict):
            raise RunFolderError(f"{self.thresholds} is not {expected}.")
        for key in ("threshold", "default"):
            value = data.get(key)
            if value is not None and not _is_probability(value):
                raise RunFolderError(f"{self.thresholds}: {key} {value!r} is not a number "
                                     "between 0 and 1 (exclusive).")
        return load_thresholds(self.thresholds)

    def load_model(self) -> FusionModel:
        """The trained model, built from the run folder alone, in eval mode and float32.
        Call `check()` first; this adds what only the weights show (names, shapes, NaN)."""
        model = self._build_model()
        try:
            model.load_state_dict(self._load_weights())
        except RuntimeError as error:
            raise RunFolderError(f"{self.model} does not fit the model that {self.config.name} "
                                 f"describes: {' '.join(str(error).split())[:400]}") from None
        return model.eval()

    def _build_model(self) -> FusionModel:
        """The model's architecture from config.yaml and text_encoder/, without weights."""
        cfg, labels = self.load_config(), self.load_labels()
        try:
            return model_from_config(cfg, len(labels), text_config_dir=self.text_encoder)
        except (CaptagError, ValueError, OSError) as error:
            raise RunFolderError(f"{self.config} or {self.text_encoder.name}/ does not describe a "
                                 f"model that can be built: {error}") from None

    def _load_weights(self) -> dict[str, torch.Tensor]:
        """The weights in float32; RunFolderError naming the file and tensor if one holds NaN
        or infinity (a diverged run)."""
        try:
            state = load_file(self.model)
        except (SafetensorError, OSError) as error:
            raise RunFolderError(f"{self.model} is truncated or corrupt ({error}).") from None
        for name, tensor in state.items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise RunFolderError(f"{self.model}: tensor {name!r} holds NaN or infinite values "
                                     "(the training diverged, or the file is damaged). Train "
                                     "the run again, e.g. with a lower --lr.")
        return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}

    # --- the folder as a whole -------------------------------------------------------------

    def holds_run(self) -> bool:
        """True once a train saved a checkpoint or finished. A folder without either (empty,
        or left by a train that failed early) may be cleared and trained into again."""
        return self.resumable() or self.summary.exists()

    def resumable(self) -> bool:
        return (self.checkpoints / "last.ckpt").is_file()

    def clear(self) -> None:
        """Remove what a failed train left (only the run folder's own files; not .lock), so a
        new train starts clean. Refuses a folder that holds a run."""
        if self.holds_run():
            raise RunFolderError(f"{self.path} holds a run; it is not cleared.")
        for path in (self.config, self.labels, self.split, self.thresholds, self.metrics,
                     self.summary, self.bad_images, self.bad_rows, self.model, self.onnx):
            path.unlink(missing_ok=True)
        for folder in (self.text_encoder, self.checkpoints, self.logs):
            shutil.rmtree(folder, ignore_errors=True)

    @contextmanager
    def lock(self):
        """Hold RUN_DIR/.lock (creating the folder): a second process that asks while it is
        held gets RunFolderError at once. `train` holds it for the whole run."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"Cannot create the run folder {self.path}: "
                              f"{error.strerror or error}.") from None
        held = FileLock(str(self.lock_file), timeout=0)
        try:
            held.acquire()
        except Timeout:
            raise RunFolderError(f"another captag process is using {self.path}; wait for it to "
                                 "finish, or choose another folder.") from None
        try:
            yield self
        finally:
            held.release()

    def is_writable(self) -> bool:
        """Whether files can be added to the folder (False on a read-only mount or folder)."""
        return os.access(self.path, os.W_OK)

    def fingerprint(self) -> str:
        """A digest of the model file and config.yaml: names what is derived from them."""
        digest = hashlib.sha256()
        for path in (self.config, self.model):
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()[:32]

    # --- saving ----------------------------------------------------------------------------

    def save_model(self, model: FusionModel) -> None:
        state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v.detach()
                 for k, v in model.state_dict().items()}
        with replaced(self.model) as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, tmp)
        if model.text is not None:
            model.text.save_config(str(self.text_encoder))

    def write_json(self, path: Path, data) -> None:
        """Strict JSON (NaN written as null), written atomically."""
        write_json(path, data)


def _as_run_error(path: Path, load):
    """`load(path)`, with any ValueError (bad JSON, bad content) as a RunFolderError that names
    the file."""
    try:
        return load(path)
    except RunFolderError:
        raise
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing.") from None
    except (ValueError, KeyError, TypeError) as error:
        raise RunFolderError(f"{path}: {error}") from None


def _is_probability(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 < value < 1)
