"""Benchmark of CPU prediction (issue 9 item 3): exported folders against a naive PyTorch loop.

    python benchmarks/bench_predict.py --run RUN_DIR [--export DIR] [--export-int8 DIR]
                                       [--rows 2000] [--single 200] [--splits]

On the first `--rows` rows of train.csv (a speed benchmark: the run may have trained on them),
each measurement in a fresh process (so its peak RSS is its own):
  batched  captag's ExportedPredictor.predict_probs, JPEG + caption -> probabilities, batch 32,
           fp32 and int8 folders (samples/s)
  single   one image file + caption per `predict` call, decoding included (p50, p95 ms)
  fast     the int8 folder with fast_decode (JPEGs decoded at a reduced scale, >= image size)
  naive    the seed's way: the run's model in eager PyTorch, PIL decoding, batch 16, fp32, no
           overlap (samples/s)
  splits   (--splits) batched fp32 for each split of ONNX Runtime threads and decode threads
The folders are exported to a temporary folder unless given. Prints a markdown table and writes
benchmarks/results/predict.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "comp5329"


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (ru_maxrss survives exec on Linux)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rows_of(data: Path, rows: int):
    from captag.data import read_records
    return read_records(data / "train.csv")[:rows]


def measure_batched(folder, records, images, threads=None, decode_threads=None,
                    fast_decode=False) -> dict:
    from captag.deploy.runtime import ExportedPredictor
    predictor = ExportedPredictor.load(folder, threads, decode_threads, fast_decode)
    predictor.predict_probs(records[:32], images, progress=False)  # warm-up
    started = time.perf_counter()
    predictor.predict_probs(records, images, batch_size=32, progress=False)
    seconds = time.perf_counter() - started
    return {"samples_per_second": round(len(records) / seconds, 1), "seconds": round(seconds, 2),
            "threads": predictor.threads, "decode_threads": decode_threads or predictor.decode_threads}


def measure_single(folder, records, images, fast_decode=False) -> dict:
    import numpy as np
    from captag.deploy.runtime import ExportedPredictor
    predictor = ExportedPredictor.load(folder, fast_decode=fast_decode)
    predictor.predict(images / records[0].image_id, records[0].caption)  # warm-up
    times = []
    for record in records:
        started = time.perf_counter()
        predictor.predict(images / record.image_id, record.caption)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2), "calls": len(times)}


def measure_naive(run, records, images) -> dict:
    """The seed's loop: eager PyTorch, PIL decoding in the loop, batch 16, no overlap."""
    import torch
    from captag.data.images import load_image
    from captag.data.transforms import build_transform
    from captag.runs import RunFolder
    folder = RunFolder(run)
    cfg, model = folder.load_config(), folder.load_model()
    transform = build_transform(cfg.image_size, model.image.mean, model.image.std)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(records), 16):
            batch = records[start:start + 16]
            pixels = torch.stack([transform(load_image(images / r.image_id)) for r in batch])
            tokens = model.text.tokenize([r.caption for r in batch])
            torch.sigmoid(model(image=pixels, **tokens))
    seconds = time.perf_counter() - started
    return {"samples_per_second": round(len(records) / seconds, 1), "seconds": round(seconds, 2),
            "torch_threads": torch.get_num_threads()}


def child(args) -> None:
    """One measurement in this process; prints its JSON."""
    records, images = rows_of(args.data, args.rows), args.data / "data"
    kind, *rest = args.measure.split(":")
    fast = kind.endswith("-fast")
    if kind.startswith("batched"):
        threads = [int(x) for x in rest[1:]] if len(rest) > 1 else [None, None]
        result = measure_batched(rest[0], records, images, *threads, fast_decode=fast)
    elif kind.startswith("single"):
        result = measure_single(rest[0], records[:args.single], images, fast)
    else:
        result = measure_naive(args.run, records, images)
    print("RESULT " + json.dumps({**result, "peak_rss_mb": round(peak_rss_mb(), 1)}))


def run_child(args, measure: str) -> dict:
    command = [sys.executable, __file__, "--measure", measure, "--run", str(args.run),
               "--rows", str(args.rows), "--single", str(args.single), "--data", str(args.data)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{measure} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def exported(args, tmp: Path) -> dict:
    from captag.deploy.export import export_run
    folders = {"fp32": args.export, "int8": args.export_int8}
    for name, folder in folders.items():
        if folder is None:
            folders[name] = tmp / name
            export_run(args.run, folders[name], int8=name == "int8")
    return folders


def folder_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in Path(folder).iterdir()) / 2**20, 2)


def table(results: dict) -> str:
    naive = results["naive"]["samples_per_second"]
    lines = ["| measurement | result | peak RSS MB |", "|---|---|---|"]
    for name, r in results.items():
        if "samples_per_second" in r:
            ratio = f" ({r['samples_per_second'] / naive:.2f}x naive)" if name != "naive" else ""
            value = f"{r['samples_per_second']} samples/s{ratio}"
        else:
            value = f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms"
        lines.append(f"| {name} | {value} | {r['peak_rss_mb']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--export", type=Path, help="exported fp32 folder (default: export now)")
    parser.add_argument("--export-int8", type=Path, help="exported int8 folder")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--single", type=int, default=200, help="calls for the latency")
    parser.add_argument("--splits", action="store_true", help="also try thread splits")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "predict.json")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        folders = exported(args, Path(tmp))
        results = {f"batched {n}": run_child(args, f"batched:{f}") for n, f in folders.items()}
        results.update({f"single {n}": run_child(args, f"single:{f}") for n, f in folders.items()})
        results["batched int8, fast JPEG decoding"] = run_child(
            args, f"batched-fast:{folders['int8']}")
        results["single int8, fast JPEG decoding"] = run_child(args, f"single-fast:{folders['int8']}")
        results["naive"] = run_child(args, "naive")
        if args.splits:
            for threads, decode in ((1, 1), (2, 1), (2, 2), (1, 2)):
                results[f"batched fp32, {threads} ORT + {decode} decode threads"] = run_child(
                    args, f"batched:{folders['fp32']}:{threads}:{decode}")
        sizes = {name: folder_mb(folder) for name, folder in folders.items()}
    naive = results["naive"]["samples_per_second"]
    report = {"rows": f"the first {args.rows} rows of train.csv", "run": str(args.run),
              "cores": os.cpu_count(), "machine": platform.platform(), "folder_mb": sizes,
              "speedup_vs_naive": {n: round(r["samples_per_second"] / naive, 2)
                                   for n, r in results.items() if n.startswith("batched")},
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(results))
    print(f"\nfolders: {sizes} MB; {report['rows']}; written {args.out}")


if __name__ == "__main__":
    main()
