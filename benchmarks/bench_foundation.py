"""Benchmark of the foundation targets, each with a cold feature cache, on this machine.

    python benchmarks/bench_foundation.py [--only mini|full|evaluate] [--data ../shared/datasets/comp5329]

mini:     the README main job on mini.csv: train (defaults), evaluate, predict test_mini.csv
full:     `captag train --csv train.csv` with default settings (target <= 20 min, val F1 >= 0.895)
evaluate: `captag evaluate` of the full run on its validation rows (target >= 40 samples/s)

Prints a table and writes benchmarks/results/foundation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "comp5329"


def captag(*args: str, env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "captag.cli", "-q", *args], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"captag {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def val_csv(run: Path, data: Path, out: Path) -> Path:
    from captag.data import load_split, read_records
    _, val_ids = load_split(run / "split.json")
    by_id = {r.image_id: r for r in read_records(data / "train.csv")}
    lines = ["ImageID,Labels,Caption"] + [
        f'{i},{" ".join(map(str, by_id[i].labels))},"{by_id[i].caption}"' for i in val_ids]
    out.write_text("\n".join(lines) + "\n")
    return out


def bench_mini(data: Path, work: Path, env: dict) -> dict:
    run = work / "mini-run"
    t_train, _ = captag("train", "--csv", str(data / "mini.csv"), "--out", str(run), env=env)
    t_eval, out = captag("evaluate", str(run), "--csv", str(data / "mini.csv"), "--json", env=env)
    t_pred, _ = captag("predict", str(run), "--csv", str(data / "test_mini.csv"), "--output",
                       str(work / "submission.csv"), env=env)
    summary = json.loads((run / "summary.json").read_text())
    return {"task": "README main job on mini.csv", "seconds": round(t_train + t_eval + t_pred, 1),
            "train_seconds": round(t_train, 1), "evaluate_seconds": round(t_eval, 1),
            "predict_seconds": round(t_pred, 1), "val_f1_samples": summary["val"]["f1_samples"],
            "target": "<= 300 s"}


def bench_full(data: Path, work: Path, env: dict) -> dict:
    run = work / "full-run"
    seconds, _ = captag("train", "--csv", str(data / "train.csv"), "--out", str(run), env=env)
    summary = json.loads((run / "summary.json").read_text())
    return {"task": "captag train --csv train.csv (defaults)", "seconds": round(seconds, 1),
            "features_seconds": summary["features_seconds"], "fit_seconds": summary["fit_seconds"],
            "val_f1_samples": summary["val"]["f1_samples"], "val_f1_micro": summary["val"]["f1_micro"],
            "val_f1_macro": summary["val"]["f1_macro"], "val_map": summary["val"]["map"],
            "model_file_mb": summary["model_file_mb"], "run": str(run),
            "target": "<= 1200 s and val f1_samples >= 0.895 (issue 8)"}


def bench_evaluate(data: Path, work: Path, env: dict, run: Path) -> dict:
    csv_path = val_csv(run, data, work / "val.csv")
    seconds, out = captag("evaluate", str(run), "--csv", str(csv_path), "--images",
                          str(data / "data"), "--json", env=env)
    result = json.loads(out)
    return {"task": "captag evaluate (validation rows of the full run)", "seconds": round(seconds, 1),
            "samples_per_second": result["samples_per_second"], "n_samples": result["n_samples"],
            "f1_samples": result["f1_samples"], "engine": result["engine"],
            "target": ">= 40 samples/s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["mini", "full", "evaluate"], action="append")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--run", type=Path, help="an existing full run for --only evaluate")
    parser.add_argument("--work", type=Path, help="folder for runs and the cold cache")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="captag-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CAPTAG_CACHE": str(work / f"cache-{time.time_ns()}")}
    only = args.only or ["mini", "full", "evaluate"]
    rows = []
    if "mini" in only:
        rows.append(bench_mini(args.data, work, env))
    if "full" in only:
        rows.append(bench_full(args.data, work, env))
    if "evaluate" in only:
        run = args.run or work / "full-run"
        rows.append(bench_evaluate(args.data, work, env, run))
    print(f"\n{'task':<52} {'seconds':>8}  result")
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in ("task", "seconds", "run")}
        print(f"{row['task']:<52} {row['seconds']:>8}  {extra}")
    results = HERE / "results" / "foundation.json"
    previous = json.loads(results.read_text()) if results.exists() else {}
    previous.update({row["task"]: row for row in rows})
    previous["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    results.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"\nsaved {results}")


if __name__ == "__main__":
    main()
