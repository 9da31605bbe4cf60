"""Benchmark of the runtimes and precisions of an exported model (issue 16 item 4).

    python benchmarks/bench_runtime.py --run RUN_DIR [--export DIR] [--rows 2000] [--single 100]
                                       [--train] [--no-predict]

The run's fp32 export (made in a temporary folder unless given) runs, in one process, every
way this machine has (`captag.models.engines`: ONNX Runtime fp32, OpenVINO fp32 and bf16 where
installed and the CPU has bf16) and "auto" (chosen on its first batch, from a fresh store):
  image    the image graph alone, batches of 16 preprocessed validation images (images/s)
  batched  `predict_probs` of the run's first --rows validation rows, JPEG + caption ->
           probabilities, batch 8 (samples/s), and their samples-F1 with the run's threshold
  single   one image file + caption per `predict` call, decoding included (p50 ms)
Each is reported beside its ratio to ONNX Runtime fp32 (captag's path before the runtimes
could be chosen), with the F1 change, the CPU's name and its bf16/AVX-512/AMX flags.
  train    (--train) the default `captag train` on DATA/train.csv, cold feature cache, as
           before (ONNX Runtime fp32 features, fp32 fit) and with today's defaults (auto):
           features, fit and total seconds and the validation samples-F1 (15-20 minutes each
           on 2 cores)
Prints markdown tables and writes benchmarks/results/runtime.json (or --out); --no-predict
keeps the file's earlier prediction results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "comp5329"


def validation_rows(run: Path, data: Path, rows: int):
    from captag.data import read_records
    from captag.runs import RunFolder
    val = set(RunFolder(run).load_split()[1])
    return [r for r in read_records(data / "train.csv") if r.image_id in val][:rows]


def measure(folder: Path, way: str, records, images: Path, single: int) -> dict:
    """Image graph, batched and single-sample speeds, and samples-F1, run `way`."""
    from captag.deploy.runtime import ExportedPredictor
    from captag.evaluation.metrics import compute_metrics
    runtime, precision = way.split()
    predictor = ExportedPredictor.load(folder, runtime=runtime, precision=precision)
    chosen_in = time.perf_counter()
    predictor.predict_probs(records[:8], images, progress=False)  # warm-up ("auto": chooses)
    chosen_in = time.perf_counter() - chosen_in
    pixels = predictor._prepare([images / r.image_id for r in records[:16]],
                                [r.image_id for r in records[:16]], [""] * 16)["image"]
    image = predictor.graphs["image"]
    image({"image": pixels})
    started = time.perf_counter()
    for _ in range(5):
        image({"image": pixels})
    image_rate = 5 * 16 / (time.perf_counter() - started)
    started = time.perf_counter()
    probs = predictor.predict_probs(records, images, batch_size=8, progress=False)
    batched = len(records) / (time.perf_counter() - started)
    targets = predictor.labels.encode_many([r.labels for r in records])
    f1 = compute_metrics(targets, probs, predictor.threshold, predictor.at_least_one)["f1_samples"]
    times = []
    for record in records[:single]:
        started = time.perf_counter()
        predictor.predict(images / record.image_id, record.caption)
        times.append((time.perf_counter() - started) * 1000)
    return {"way": way, "runtimes": predictor.graphs.describe(), "first_batch_s": round(chosen_in, 2),
            "image_per_s": round(image_rate, 1), "samples_per_s": round(batched, 1),
            "single_p50_ms": round(float(np.percentile(times, 50)), 2),
            "f1_samples": round(float(f1), 4), "rows": len(records)}


# the default train before (ONNX Runtime fp32 features, an fp32 fit) and now (auto, the defaults)
TRAIN_WAYS = {"before": ["--feature-runtime", "onnxruntime", "--feature-precision", "fp32",
                         "--precision", "32-true"],
              "auto": []}


def train(data: Path, name: str, tmp: Path) -> dict:
    """The default `captag train` on DATA/train.csv with TRAIN_WAYS[name], from a cold cache."""
    out = tmp / f"train-{name}"
    env = {**os.environ, "CAPTAG_CACHE": str(tmp / f"cache-{name}")}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "captag.cli", "-q", "train", "--data",
                    str(data / "train.csv"), "--out", str(out), *TRAIN_WAYS[name]], env=env,
                   check=True)
    wall = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    return {"way": name, "options": " ".join(TRAIN_WAYS[name]), "wall_s": round(wall, 1),
            "features_s": summary["features_seconds"], "fit_s": summary["fit_seconds"],
            "train_s": summary["train_seconds"], "precision": summary["precision"],
            "val_f1_samples": round(summary["val"]["f1_samples"], 4)}


def train_table(results: list[dict]) -> str:
    base = results[0]
    lines = ["| train | fit precision | features (s) | fit (s) | train (s) | validation samples-F1 |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['way']} | {r['precision']} | {r['features_s']:.0f} | {r['fit_s']:.0f} "
                     f"| {r['train_s']:.0f} ({r['train_s'] / base['train_s']:.2f}x) "
                     f"| {r['val_f1_samples']:.4f} ({r['val_f1_samples'] - base['val_f1_samples']:+.4f}) |")
    return "\n".join(lines)


def table(results: list[dict]) -> str:
    base = results[0]
    lines = ["| way | graphs | image graph (img/s) | batched (samples/s) | single p50 (ms) | "
             "samples-F1 (change) |", "|---|---|---|---|---|---|"]
    for r in results:
        graphs = ", ".join(f"{part}: {way}" for part, way in r["runtimes"].items())
        lines.append(
            f"| {r['way']} | {graphs} | {r['image_per_s']} ({r['image_per_s'] / base['image_per_s']:.2f}x) "
            f"| {r['samples_per_s']} ({r['samples_per_s'] / base['samples_per_s']:.2f}x) "
            f"| {r['single_p50_ms']} ({r['single_p50_ms'] / base['single_p50_ms']:.2f}x) "
            f"| {r['f1_samples']:.4f} ({r['f1_samples'] - base['f1_samples']:+.4f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run folder trained on train.csv "
                        "(the prediction part's model)")
    parser.add_argument("--export", type=Path, help="its fp32 export (default: made here)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--single", type=int, default=100)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "runtime.json")
    parser.add_argument("--train", action="store_true", help="also time the default train")
    parser.add_argument("--no-predict", action="store_true", help="skip the prediction part")
    args = parser.parse_args()
    if not (args.run or args.no_predict):
        parser.error("--run RUN_DIR is needed unless --no-predict")
    from captag.models import engines
    tmp = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    os.environ["CAPTAG_CACHE"] = str(tmp / "cache")  # "auto" chooses afresh
    earlier = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results, trained = earlier.get("results", []), earlier.get("train", [])
    if not args.no_predict:
        folder = args.export or tmp / "export"
        if not args.export:
            from captag.deploy.export import export_run
            export_run(args.run, folder)
        records = validation_rows(args.run, args.data, args.rows)
        ways = [str(way) for way in engines.candidates("auto", "auto")] + ["auto auto"]
        results = []
        for way in ways:
            print(f"{way} ...", file=sys.stderr, flush=True)
            results.append(measure(folder, way, records, args.data / "data", args.single))
    if args.train:
        trained = [train(args.data, name, tmp) for name in TRAIN_WAYS]
    info = engines.cpu()
    flags = [f for f in info["flags"] if f.startswith(("avx512", "amx")) or f in ("avx2", "avx_vnni")]
    print(f"CPU: {info['name']}, {os.cpu_count()} cores; flags: {' '.join(flags)}\n")
    print(table(results))
    if trained:
        print("\n" + train_table(trained))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "results": results, "train": trained, "cpu": info["name"], "cores": os.cpu_count(), "flags": flags,
        "openvino": engines.openvino_version(), "run": str(args.run),
        "command": "python benchmarks/bench_runtime.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat()}, indent=1) + "\n")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
