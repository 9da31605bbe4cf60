"""`captag export`: a run folder as a standalone model folder that `captag.deploy.runtime` runs
without torch.

The folder holds three ONNX graphs (image -> image features, caption tokens -> text features,
features -> logits; only those the model has), the tokenizer (`tokenizer.json`), the token map
of the shrunk vocabulary (`token_map.npy`), `labels.json`, `thresholds.json`, `split.json` and
`model.yaml`. The vocabulary keeps the embedding rows of the tokens that the run's training
captions use, plus the special tokens; the runtime maps every other token to [UNK]. With int8,
the text graph and the head are quantised dynamically (MatMul, Gemm, Gather) and the image graph
as `image_quant` says: static QDQ or QOperator (per channel, calibrated on 200 training images;
convolutions only, the first and the last kept fp32), dynamic, or fp32. Int8 "auto" then keeps
each graph's fp32 version where that runs faster on this machine (`graph_speed`), and says so;
"all" keeps every graph int8. model.yaml records the times (`provenance.int8_speed`).
"""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

import captag
from captag.config import INT8
from captag.data import Data, DataOptions, read_data
from captag.data.sources import remembered
from captag.data.split import in_split_order
from captag.data.images import open_image
from captag.errors import ConfigError, DataNotFoundError, OutputError
from captag.evaluation.size import BYTES_PER_MB, file_mb, parameter_count
from captag.files import ensure_parent
from captag.models import onnx
from captag.models.fusion import FusionModel
from captag.runs import RunFolder
from captag.deploy import MODEL_YAML, graph_speed
from captag.deploy.runtime import FORMAT, FORMAT_VERSION, preprocess_image

IMAGE_QUANT = ("qdq", "qoperator", "dynamic", "fp32")
DEFAULT_IMAGE_QUANT = "qoperator"
CALIBRATION_IMAGES = 200


class _ImagePart(nn.Module):
    """image -> pooled features (or the last feature map, for a CSRA head)."""

    def __init__(self, model: FusionModel):
        super().__init__()
        self.model = model

    def forward(self, image):
        if self.model.csra:
            return self.model.image.feature_map(image, 0)
        return self.model.image(image, start=0)


class _TextPart(nn.Module):
    """input_ids, attention_mask -> pooled caption features."""

    def __init__(self, model: FusionModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.text(input_ids, attention_mask, start=0)


class _Head(nn.Module):
    """The image part and text features -> logits (FusionModel.forward after the encoders)."""

    def __init__(self, model: FusionModel):
        super().__init__()
        self.model = model

    def forward(self, *parts):
        model, features, maps = self.model, list(parts), None
        if model.image is not None and model.csra:
            maps = parts[0]
            features[0] = model.image.pool(maps)
        logits = model.head(torch.cat(features, dim=1))
        return logits if maps is None else logits + model.csra * model._attention(maps)


def check_out(out) -> Path:
    """The output folder: OutputError if it exists and is not an empty folder."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"--out {out} exists and is not an empty folder: choose a new folder "
                          "(an export never overwrites one).")
    ensure_parent(out, "--out")
    return out


def training_records(run: RunFolder, cfg) -> tuple[Data, list]:
    """The run's training data and the records of its training split, in the split's order
    (every record when the run keeps no split)."""
    if not Path(cfg.csv).exists():
        raise DataNotFoundError(f"{cfg.csv} (the training data named in {run.config}) is not "
                                "there: the vocabulary is shrunk to its captions' tokens. Run "
                                "from the folder the run was trained in, pass --data where the "
                                "data is now, or pass --full-vocab.")
    data = read_data(cfg.csv, DataOptions.of(cfg))
    if not run.split.is_file():
        return data, data.records
    return data, in_split_order(data.records, run.load_split()[0])


def shrink_vocabulary(model: FusionModel, captions: list[str]) -> np.ndarray:
    """Keep only the embedding rows of the tokens in `captions` and the special tokens (in
    their old order) and return the token map: old id -> new id, any other -> [UNK]'s."""
    tokenizer = model.text.tokenizer
    used = tokenizer(captions, truncation=True, max_length=model.text.max_length)["input_ids"]
    kept = sorted({i for ids in used for i in ids} | set(tokenizer.all_special_ids))
    embeddings = model.text.model.get_input_embeddings()
    token_map = np.full(embeddings.num_embeddings, kept.index(tokenizer.unk_token_id), np.int64)
    token_map[kept] = np.arange(len(kept))
    smaller = nn.Embedding(len(kept), embeddings.embedding_dim)
    smaller.weight.data = embeddings.weight.data[kept].clone()
    model.text.model.set_input_embeddings(smaller)
    return token_map


def export_graphs(model: FusionModel, folder: Path, image_size: int) -> dict:
    """image.onnx, text.onnx and head.onnx (those the model has); their file names by part."""
    graphs, parts = {}, []
    with torch.no_grad():
        if model.image is not None:
            image = torch.zeros(2, 3, image_size, image_size)
            onnx.export(_ImagePart(model), [image], folder / "image.onnx", ["image"],
                        "image_features")
            graphs["image"] = "image.onnx"
            parts.append(_ImagePart(model)(image))
        if model.text is not None:
            ids = torch.ones(2, 8, dtype=torch.long)
            onnx.export(_TextPart(model), [ids, ids], folder / "text.onnx",
                        ["input_ids", "attention_mask"], "text_features",
                        {"input_ids": {1: "tokens"}, "attention_mask": {1: "tokens"}})
            graphs["text"] = "text.onnx"
            parts.append(_TextPart(model)(ids, ids))
    names = [n for n, part in (("image_features", "image"), ("text_features", "text"))
             if part in graphs]
    onnx.export(_Head(model), parts, folder / "head.onnx", names, "logits")
    graphs["head"] = "head.onnx"
    return graphs


class _Calibration:
    """Batches of preprocessed training images for static quantisation."""

    def __init__(self, paths: list[Path], preprocessing: dict, batch: int = 20):
        self.paths, self.pre, self.batch = paths, preprocessing, batch

    def get_next(self):
        if not self.paths:
            return None
        chunk, self.paths = self.paths[:self.batch], self.paths[self.batch:]
        pre = self.pre
        return {"image": np.stack([preprocess_image(open_image(p, p.name), pre["image_size"],
                                                    pre["mean"], pre["std"]) for p in chunk])}


def calibration_images(data: Data, records: list, count: int = CALIBRATION_IMAGES) -> list[Path]:
    """The images of the first `count` training records."""
    return [data.image_dir() / r.image_id for r in records[:count]]


def _end_convs(path: Path) -> list[str]:
    """The names of the first and last Conv nodes of a graph (kept fp32: they lose the most)."""
    import onnx as onnx_lib
    convs = [n.name for n in onnx_lib.load(str(path)).graph.node if n.op_type == "Conv"]
    return [convs[0], convs[-1]] if convs else []


def quantize_graphs(folder: Path, graphs: dict, image_quant: str, calibration: list[Path],
                    preprocessing: dict) -> None:
    """Replace each graph by its int8 version, in place (after ONNX Runtime's pre-processing)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    for part, name in graphs.items():
        quant_pre_process(str(folder / name), str(folder / name), skip_symbolic_shape=True)
    for part, ops in (("text", ["MatMul", "Gather"]), ("head", ["MatMul", "Gemm"])):
        if part in graphs:
            path = folder / graphs[part]
            quantize_dynamic(path, path, op_types_to_quantize=ops, weight_type=QuantType.QInt8)
    if "image" not in graphs or image_quant == "fp32":
        return
    path = folder / graphs["image"]
    if image_quant == "dynamic":
        quantize_dynamic(path, path, op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                         weight_type=QuantType.QUInt8)
        return
    quantize_static(path, path, _Calibration(calibration, preprocessing),
                    quant_format=QuantFormat.QDQ if image_quant == "qdq" else QuantFormat.QOperator,
                    op_types_to_quantize=["Conv"], nodes_to_exclude=_end_convs(path),
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)


def _spec(run: RunFolder, cfg, model: FusionModel, folder: Path, graphs: dict, pre: dict,
          int8: str | bool, image_quant: str, speed: dict | None) -> dict:
    graph_mb = {part: round(file_mb(folder / name), 3) for part, name in graphs.items()}
    parameters = {part: parameter_count(module) if module is not None else 0
                  for part, module in (("image", model.image), ("text", model.text),
                                       ("head", model.head))}
    total = sum(parameters.values())
    inputs = {"image": ["image"], "text": ["input_ids", "attention_mask"],
              "head": [n for n, p in (("image_features", "image"), ("text_features", "text"))
                       if p in graphs]}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": {"name": cfg.model, "image_encoder": cfg.image_encoder if model.image else None,
                  "text_encoder": cfg.text_encoder if model.text else None},
        "graphs": graphs, "inputs": {p: inputs[p] for p in graphs}, "outputs": {"head": "logits"},
        "preprocessing": pre,
        "data": remembered(cfg),
        "sizes": {"graphs_mb": graph_mb, "model_mb": round(sum(graph_mb.values()), 2),
                  "folder_mb": round(sum(file_mb(p) for p in folder.iterdir()), 2),
                  "parameters": total, "parameters_by_part": parameters,
                  "parameter_mb_fp32": round(total * 4 / BYTES_PER_MB, 2)},
        "provenance": {"run": str(run.path.resolve()), "config": cfg.to_dict(),
                       "val_f1_samples": run.load_val_f1(), "captag_version": captag.__version__,
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                           timespec="seconds"),
                       "int8": bool(int8), "image_quantization": image_quant if int8 else None,
                       "int8_speed": speed},
    }


def _preprocessing(cfg, model: FusionModel, token_map: bool) -> dict:
    pre = {"at_least_one": cfg.at_least_one}
    if model.image is not None:
        pre.update(image_size=cfg.image_size, mean=[float(v) for v in model.image.mean],
                   std=[float(v) for v in model.image.std], resize_filter="bilinear")
    if model.text is not None:
        tokenizer = model.text.tokenizer
        pre.update(tokenizer="tokenizer.json", max_length=model.text.max_length,
                   pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token,
                   token_map="token_map.npy" if token_map else None)
    return pre


def export_run(run_dir, out, int8: bool | str = False, image_quant: str = DEFAULT_IMAGE_QUANT,
               shrink: bool = True, data: dict | None = None) -> dict:
    """Export the run in `run_dir` to the new folder `out`; returns its model.yaml as a dict.
    Everything is checked first, and the folder appears whole or not at all. `data` (settings
    such as csv and images) says where the run's training data is now, for the vocabulary's
    captions and the int8 calibration images. `int8`: False, "auto" (or True: each graph int8
    where that runs faster here than fp32 does) or "all" (see `graph_speed`)."""
    if image_quant not in IMAGE_QUANT:
        raise ConfigError(f"image_quant {image_quant!r} is not one of {', '.join(IMAGE_QUANT)}.")
    int8 = "auto" if int8 is True else int8
    if int8 and int8 not in INT8:
        raise ConfigError(f"int8 {int8!r} is not one of {', '.join(INT8)}.")
    out = check_out(out)
    run = RunFolder(run_dir)
    run.check()
    cfg = run.load_config()
    model = run.load_model()
    if data:
        cfg = cfg.update(**data)
    shrunk = shrink and model.text is not None
    calibrated = int8 and model.image is not None and image_quant in ("qdq", "qoperator")
    data, records = training_records(run, cfg) if shrunk or calibrated else (None, [])
    captions = [r.caption for r in records] if shrunk else None
    calibration = calibration_images(data, records) if calibrated else []
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        spec = _write(run, cfg, model, staging, captions, calibration, int8, image_quant)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return spec


def _write(run, cfg, model, folder: Path, captions, calibration, int8, image_quant) -> dict:
    if captions is not None:
        np.save(folder / "token_map.npy", shrink_vocabulary(model, captions))
    if model.text is not None:
        model.text.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    pre = _preprocessing(cfg, model, captions is not None)
    graphs = export_graphs(model, folder, cfg.image_size)
    speed = None
    if int8:
        fp32 = folder / ".fp32"
        fp32.mkdir()
        for name in graphs.values():
            shutil.copyfile(folder / name, fp32 / name)
        feeds = graph_speed.example_feeds(fp32, graphs, cfg.image_size if model.image else None)
        quantize_graphs(folder, graphs, image_quant, calibration, pre)
        speed = graph_speed.keep_faster(folder, fp32, graphs, feeds, int8)
        shutil.rmtree(fp32)
    for source in (run.labels, run.thresholds, run.split):
        if source.is_file():
            shutil.copyfile(source, folder / source.name)
    spec = _spec(run, cfg, model, folder, graphs, pre, int8, image_quant, speed)
    (folder / MODEL_YAML).write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec
