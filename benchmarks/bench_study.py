"""Benchmark of `captag study` on train.csv in frozen mode: cold feature cache, then warm.

    python benchmarks/bench_study.py [--only cold|warm] [--data ../shared/datasets/comp5329]
                                     [--work DIR] [--docs docs/study]

cold: a fresh feature cache (WORK/cache, emptied first), target <= 30 min
warm: the same study into a new folder, features from the cold run's cache, target <= 5 min

Prints a table, updates benchmarks/results/study.json (a part not run keeps its earlier entry),
and copies the cold run's report (report.md, report.html, results.csv, plots/) to docs/study/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "comp5329"


def run_study(csv: Path, out: Path, cache: Path) -> float:
    env = {**os.environ, "CAPTAG_CACHE": str(cache)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "captag.cli", "-q", "study", "--csv", str(csv),
                           "--out", str(out)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (out / "study.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"captag study failed:\n{done.stderr[-3000:]}")
    return seconds


def count_rows(out: Path) -> dict:
    import csv
    rows = list(csv.DictReader((out / "results.csv").open()))
    return {"runs_ok": sum(r["status"] == "ok" for r in rows), "rows": len(rows),
            "best_f1_samples": max((float(r["f1_samples"]) for r in rows if r["status"] == "ok"),
                                   default=None)}


def copy_report(out: Path, docs: Path) -> None:
    """Replace the report files under docs (its README.md stays)."""
    docs.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "report.html", "results.csv"):
        shutil.copy(out / name, docs / name)
    shutil.rmtree(docs / "plots", ignore_errors=True)
    shutil.copytree(out / "plots", docs / "plots")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["cold", "warm"], action="append")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--docs", type=Path, default=HERE.parent / "docs" / "study")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="captag-study-"))
    work.mkdir(parents=True, exist_ok=True)
    only = args.only or ["cold", "warm"]
    cache = work / "cache"
    if "cold" in only:
        shutil.rmtree(cache, ignore_errors=True)
    elif not cache.is_dir():
        parser.error(f"--only warm needs the cold run's cache in {cache}: run the cold part first")
    csv = args.data / "train.csv"
    results = []
    for name, target in (("cold", "<= 1800 s"), ("warm", "<= 300 s")):
        if name not in only:
            continue
        out = work / f"study-{name}"
        shutil.rmtree(out, ignore_errors=True)
        seconds = run_study(csv, out, cache)
        results.append({"task": f"captag study --csv train.csv ({name} feature cache)",
                        "seconds": round(seconds, 1), "target": target, **count_rows(out)})
        print(f"{results[-1]['task']:<52} {seconds:>8.1f} s  {results[-1]}", flush=True)
        if name == "cold":
            copy_report(out, args.docs)
    saved = HERE / "results" / "study.json"
    done = {row["task"] for row in results}
    earlier = json.loads(saved.read_text()) if saved.exists() else []
    saved.parent.mkdir(exist_ok=True)
    saved.write_text(json.dumps([r for r in earlier if r["task"] not in done] + results, indent=2)
                     + "\n")
    print(f"saved {saved}" + (f"; report copied to {args.docs}" if "cold" in only else ""))


if __name__ == "__main__":
    main()
