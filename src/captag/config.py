"""One run's settings: a validated dataclass, read from YAML or the command line, saved resolved.

Every field declares its help text and what it allows (choices or a range). A `RunConfig` is
checked whenever it is built, so a wrong type, value or name stops at once with a message that
names the field, the bad value and the allowed ones, and suggests the nearest name for a typo
(as Ultralytics' `check_cfg` does). This module imports nothing heavy, so the check takes
milliseconds. Model names are checked by `captag.models.catalog`, one layer up.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from captag.errors import ConfigError, DataNotFoundError

SCHEDULES = ("constant", "linear", "cosine")
LOSSES = ("bce", "asl")
FSDP_NEEDS_GPU = ("strategy: fsdp needs GPUs (Lightning's FSDP runs on CUDA only): use "
                  "--accelerator gpu, or --strategy ddp for CPU processes.")
AUTO_CSRA = 0.1  # csra when unset and the image encoder trains (needs its map)
DEFAULT_EPOCHS = 3
# rows per prediction batch: the runtimes' memory grows with it, their speed does not (int8
# export, 2,000 rows on 2 cores: 0.68 GiB at 8, 2.06 GiB at 32)
PREDICT_BATCH_SIZE = 8
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp")
DATA_FORMATS = ("comp5329", "csv", "tsv", "jsonl", "parquet", "imagefolder")
PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")
RUNTIMES = ("auto", "onnxruntime", "openvino")  # what runs an ONNX graph (captag.models.engines)
GRAPH_PRECISIONS = ("auto", "fp32", "bf16")
INT8 = ("auto", "all")  # export --int8: int8 where it runs faster here than fp32, or every graph


def cache_root() -> Path:
    """captag's cache folder (features, exported graphs, unpacked weights):
    $CAPTAG_CACHE, or ~/.cache/captag."""
    env = os.environ.get("CAPTAG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "captag"


def option(default, help: str, *, choices: tuple | None = None, low: float | None = None,
           high: float | None = None, high_open: bool = False, low_open: bool = False):
    """A config field with its help and allowed values (choices, or low <= value <= high;
    `*_open` makes that bound strict)."""
    return field(default=default, metadata=dict(help=help, choices=choices, low=low, high=high,
                                                low_open=low_open, high_open=high_open))


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run does. Saved as config.yaml in the run folder."""

    csv: str = option("", "the data (--data is the same): a CSV, TSV, JSON Lines or Parquet "
                          "file, an imagefolder (a folder with metadata.jsonl or metadata.csv), "
                          "or a COMP5329 CSV (ImageID,Labels,Caption)")
    images: str | None = option(None, "the folder that image paths are relative to (default: "
                                      "the data file's folder; data/ beside a COMP5329 CSV)")
    format: str | None = option(None, "the data's format (default: found from the path)",
                                choices=DATA_FORMATS)
    delimiter: str | None = option(None, "a CSV's field delimiter, e.g. ';' or '\\t' (default: "
                                         "sniffed)")
    image_column: str | None = option(None, "column of image paths (default: file_name, image, "
                                            "image_path, path or filepath)")
    text_column: str | None = option(None, "column of texts (default: text, caption, title or "
                                           "description)")
    label_column: str | None = option(None, "column of label sets (default: labels, tags or "
                                            "label)")
    label_sep: str | None = option(None, "separator between a row's labels, e.g. '|' (default: "
                                         "sniffed among | ; , and spaces)")
    label_columns: str | None = option(None, "0/1 columns, one per label: 'a,b,c'")
    label_columns_prefix: str | None = option(None, "0/1 label columns: every column whose name "
                                                    "starts with this, e.g. tag_")
    labels: str | None = option(None, "a file with one label per line, in order (default: the "
                                      "training rows' labels, sorted)")
    model: str = option("fusion", "fusion, image-only, text-only, an encoder name, or IMAGE+TEXT")
    image_encoder: str = option("tf_efficientnet_lite2", "image encoder of fusion and image-only")
    text_encoder: str = option("all-MiniLM-L6-v2", "text encoder of fusion and text-only")
    image_weights: str | None = option(None, "image encoder weights: a file, 'hub' or 'none'")
    text_weights: str | None = option(None, "text encoder weights: a folder, 'hub' or 'none'")
    image_trainable: int = option(3, "top image stages trained (0 frozen, -1 all)", low=-1)
    text_trainable: int = option(2, "top text layers trained (0 frozen, -1 all)", low=-1)
    image_size: int = option(320, "image side in pixels (the COMP5329 images' own size)",
                             low=32, high=2048)
    max_length: int = option(64, "caption tokens kept", low=2, high=512)
    dropout: float = option(0.3, "dropout before the classifier", low=0, high=1, high_open=True)
    csra: float | None = option(None, "weight of class-specific residual attention over the last "
                                      "image map (CSRA, Zhu and Wu 2021); 0: the seed's pooled "
                                      f"head; unset: {AUTO_CSRA} when image stages train, else 0",
                                low=0)
    csra_temperature: float = option(0.0, "CSRA softmax temperature over map locations; 0: "
                                          "max pooling (infinite temperature)", low=0)
    epochs: int | None = option(None, f"training epochs (default: {DEFAULT_EPOCHS}, or more on "
                                      "small data, to take min_steps optimiser steps, or as many "
                                      "as time_limit holds)", low=1)
    min_steps: int = option(300, "with epochs unset, the least optimiser steps: small data gets "
                                 f"more than {DEFAULT_EPOCHS} epochs", low=0)
    patience: int = option(0, "stop after this many epochs without a better validation "
                              "samples-F1 (0: never stop early)", low=0)
    time_limit: str | None = option(None, "training time budget, e.g. 20m, 1h, 90s: with epochs "
                                          "unset, the first epoch's time plans how many fit; the "
                                          "learning rate decays by time as well as steps, and "
                                          "training stops at the budget with the best checkpoint")
    batch_size: int = option(32, "batch size", low=1)
    loss: str = option("asl", "training loss: bce (binary cross-entropy) or asl (asymmetric "
                              "loss, Ridnik et al. 2021)", choices=LOSSES)
    asl_gamma_neg: float = option(2.0, "ASL focusing of negative labels", low=0)
    asl_gamma_pos: float = option(0.0, "ASL focusing of positive labels", low=0)
    asl_clip: float = option(0.05, "ASL probability margin shifted onto negatives", low=0, high=1,
                             high_open=True)
    ema: float = option(0.0, "decay of an exponential moving average of the weights, scored "
                             "beside the raw weights each epoch, the better kept (0: off; "
                             "e.g. 0.999)", low=0, high=1, high_open=True)
    lr: float = option(4e-4, "learning rate of the encoders", low=0, low_open=True)
    head_lr: float = option(1e-3, "learning rate of the classifier head", low=0, low_open=True)
    weight_decay: float = option(0.0, "Adam weight decay", low=0)
    schedule: str = option("linear", "learning-rate decay per step", choices=SCHEDULES)
    warmup: float = option(0.05, "fraction of steps of linear warm-up", low=0, high=1,
                           high_open=True)
    seed: int = option(0, "random seed (split, init, order)", low=0, high=2**32 - 1)
    val_fraction: float = option(0.2, "validation share (0: no validation split)", low=0,
                                 high=1, high_open=True)
    hflip: float = option(0.5, "probability of a horizontal flip (trained pixels)", low=0, high=1)
    rotation: float = option(10.0, "largest random rotation in degrees", low=0, high=180)
    feature_flip: float = option(0.0, "probability of mirroring cached image maps in training",
                                 low=0, high=1)
    at_least_one: bool = option(True, "give every row at least its most likely label")
    skip_bad: bool = option(False, "leave out rows whose image is missing or unreadable")
    cache_dir: str | None = option(None, "feature cache folder (default $CAPTAG_CACHE or "
                                         "~/.cache/captag)")
    num_workers: int = option(1, "data-loading worker processes", low=0)
    feature_runtime: str | None = option(None, "what runs the frozen image stages' graph: "
                                         "auto, onnxruntime or openvino (default "
                                         "$CAPTAG_RUNTIME, else auto)", choices=RUNTIMES)
    feature_precision: str | None = option(None, "their precision: auto, fp32 or bf16 (default "
                                           "$CAPTAG_PRECISION, else auto: bf16 where it is faster "
                                           "and near fp32)", choices=GRAPH_PRECISIONS)
    accelerator: str = option("auto", "where to train", choices=ACCELERATORS)
    devices: str = option("auto", "devices: auto, a count (2 = two GPUs, DDP) or ids '0,1'")
    precision: str = option("auto", "numeric precision of the fit: auto is bf16-mixed when "
                                    "training on a CPU with avx512_bf16 or AMX, else 32-true",
                            choices=PRECISIONS)
    strategy: str = option("auto", "how several devices share the work: auto (one device, or DDP "
                           "for several), ddp (one process per device; gloo on CPU, NCCL on GPU), "
                           "ddp_spawn (the same, started by spawning), fsdp (sharded weights, GPU)",
                           choices=STRATEGIES)
    num_nodes: int = option(1, "machines in a multi-node run (each with --devices devices; run "
                               "the same command on every node, e.g. under torchrun or srun)",
                            low=1)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(f, getattr(self, f.name)))
        if self.strategy == "fsdp" and self.accelerator == "cpu":
            raise ConfigError(FSDP_NEEDS_GPU)

    @classmethod
    def from_dict(cls, data, source: str = "config") -> "RunConfig":
        """A config from a mapping of settings; `source` names it in errors."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of setting: value, got "
                              f"{type(data).__name__}. Example: 'epochs: 3'.")
        if "extra" in data and not data["extra"]:  # an unused field of earlier versions
            data = {k: v for k, v in data.items() if k != "extra"}
        return cls().update(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(read_yaml(path), str(path))

    def update(self, **overrides) -> "RunConfig":
        """A copy with the given fields replaced; None values are ignored, unknown names refused."""
        known = field_names()
        for name in overrides:
            if name not in known:
                raise ConfigError(f"unknown setting {name!r}{suggest(name, known)}. "
                                  f"Settings: {', '.join(known)}.")
        values = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


def field_type(f: dataclasses.Field) -> type:
    """The plain type of a field: int, float, str or bool (Optional unwrapped)."""
    kind = typing.get_type_hints(RunConfig)[f.name]
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if args else kind


def is_optional(f: dataclasses.Field) -> bool:
    return type(None) in typing.get_args(typing.get_type_hints(RunConfig)[f.name])


def suggest(value: str, allowed, cutoff: float = 0.5) -> str:
    """' (did you mean 'x'?)' for the nearest allowed name, or ''."""
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _checked(f: dataclasses.Field, value):
    """The value converted to the field's type, or a ConfigError that names the field."""
    if value is None and is_optional(f):
        return None
    value = _convert(f, value, field_type(f))
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{f.name}: {value!r} is not allowed{suggest(value, meta['choices'], 0.3)}."
                          f" Allowed: {', '.join(meta['choices'])}.")
    if f.name == "devices":
        _check_devices(value)
    if f.name == "time_limit" and value is not None:
        seconds(value)
    if f.name == "delimiter" and value is not None:
        value = {"\\t": "\t", "tab": "\t"}.get(value, value)
        if len(value) != 1:
            raise ConfigError(f"delimiter: {value!r} is not one character; write e.g. ';', "
                              "'|' or '\\t' (a tab).")
    _check_range(f, value)
    return value


def _convert(f: dataclasses.Field, value, kind: type):
    wrong = ConfigError(f"{f.name}: {value!r} is not a valid {kind.__name__} "
                        f"({f.metadata['help']}).")
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{f.name}: {value!r} is not true or false; write {f.name}: true "
                              f"or {f.name}: false.")
        return value
    if isinstance(value, bool):
        raise wrong
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise wrong
        return value
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise wrong from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise wrong
        return float(value)
    if isinstance(value, (int, float)) and f.name in ("devices", "time_limit"):
        return str(value)
    if not isinstance(value, str) or (not value.strip() and not is_optional(f) and f.name != "csv"):
        raise wrong
    return value


def _check_range(f: dataclasses.Field, value) -> None:
    meta = f.metadata
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return
    below = low is not None and (value <= low if meta["low_open"] else value < low)
    above = high is not None and (value >= high if meta["high_open"] else value > high)
    if below or above:
        parts = []
        if low is not None:
            parts.append(f"{low:g} {'<' if meta['low_open'] else '<='} {f.name}")
        if high is not None:
            parts.append(f"{'<' if meta['high_open'] else '<='} {high:g}")
        raise ConfigError(f"{f.name}: {value!r} is out of range; allowed: {' '.join(parts)} "
                          f"({meta['help']}).")


def _check_devices(value: str) -> None:
    text = value.strip()
    if text == "auto" or text == "-1":
        return
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts and all(p.isdigit() for p in parts) and (len(parts) > 1 or int(parts[0]) >= 1):
        return
    raise ConfigError(f"devices: {value!r} is not allowed. Allowed: auto, -1 (all), a count "
                      "such as 2, or device ids such as '0,1'.")


UNITS = {"s": 1, "m": 60, "h": 3600}


def seconds(duration: str) -> float:
    """Seconds in a duration such as 90s, 20m, 1.5h (a bare number is minutes)."""
    text = str(duration).strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in UNITS else (text, "m")
    try:
        value = float(number) * UNITS[unit]
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"time_limit: {duration!r} is not a duration; write e.g. 90s, 20m or "
                          "1.5h (a bare number is minutes).")
    return value


def read_yaml(path: str | Path):
    """The YAML document in `path`; a ConfigError naming the file if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Config file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.safe_load(text) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML text file (it is not UTF-8).") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).split("\n")[0]
        raise ConfigError(f"{path}{where}: not valid YAML ({problem}).") from None
