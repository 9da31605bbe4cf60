"""Whether a graph's int8 version runs faster than its fp32 one on this machine, for
`export --int8`: the int8 graph under ONNX Runtime against the fp32 graph every way this machine
has (`captag.models.engines`: ONNX Runtime fp32, OpenVINO fp32 and bf16), on one batch. With
int8 "auto", a graph whose fp32 version is faster keeps it; with "all", every graph is int8 and
the slower ones are named."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from captag.models import engines

log = logging.getLogger(__name__)
BATCH = 8
TIMED_RUNS = 3


def example_feeds(folder: Path, graphs: dict, image_size: int | None) -> dict[str, dict]:
    """A batch of inputs for each graph: random pixels, a 32-token caption of token 1, and the
    fp32 image and text graphs' outputs for the head."""
    feeds, features = {}, {}
    if "image" in graphs:
        pixels = np.random.default_rng(0).standard_normal((BATCH, 3, image_size, image_size))
        feeds["image"] = {"image": pixels.astype(np.float32)}
    if "text" in graphs:
        ids = np.ones((BATCH, 32), dtype=np.int64)
        feeds["text"] = {"input_ids": ids, "attention_mask": ids}
    for part, output in (("image", "image_features"), ("text", "text_features")):
        if part in graphs:
            run = engines.compile_graph(folder / graphs[part], engines.FP32, _threads())
            features[output] = run(feeds[part])
    feeds["head"] = features
    return feeds


def graph_ms(int8_path: Path, fp32_path: Path, feeds: dict) -> dict[str, float]:
    """Milliseconds a batch: the int8 graph under ONNX Runtime ("onnxruntime int8") and the
    fp32 graph each way this machine has (e.g. "openvino bf16")."""
    ms = {"onnxruntime int8": _ms(engines.compile_graph(int8_path, engines.FP32, _threads()),
                                  feeds)}
    for way in engines.candidates("auto", "auto"):
        ms[str(way)] = _ms(engines.compile_graph(fp32_path, way, _threads()), feeds)
    return ms


def keep_faster(folder: Path, fp32: Path, graphs: dict, feeds: dict, policy: str) -> dict:
    """Time each int8 graph in `folder` against its fp32 version in `fp32`; with policy "auto"
    put the fp32 version back where it is faster. Returns what model.yaml records."""
    kept, ms = {}, {}
    for part, name in graphs.items():
        times = graph_ms(folder / name, fp32 / name, feeds[part])
        ms[part] = {way: round(t, 2) for way, t in times.items()}
        int8_ms = times.pop("onnxruntime int8")
        way, best = min(times.items(), key=lambda item: item[1])
        kept[part] = "int8"
        if best < int8_ms:
            slower = (f"the int8 {part} graph runs a batch in {int8_ms:.1f} ms here, the fp32 "
                      f"one in {best:.1f} ms ({way})")
            if policy == "auto":
                shutil.copyfile(fp32 / name, folder / name)
                kept[part] = "fp32"
                log.warning("%s: kept fp32 (--int8 all keeps int8)", slower)
            else:
                log.warning("%s: int8 kept, as --int8 all asks, though slower", slower)
    return {"policy": policy, "kept": kept, "ms_per_batch": ms, "batch": BATCH,
            "cpu": engines.cpu()["name"], "threads": _threads()}


def _threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def _ms(run: engines.Runner, feeds: dict) -> float:
    run(feeds)  # warm-up
    spent = []
    for _ in range(TIMED_RUNS):
        started = time.perf_counter()
        run(feeds)
        spent.append(time.perf_counter() - started)
    return min(spent) * 1e3
