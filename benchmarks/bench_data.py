"""How long `captag data` takes on a whole dataset, images included (issue 22 item 6: <= 60 s
for the 18,000 rows of train.csv on 2 cores).

    python benchmarks/bench_data.py [--csv ../shared/datasets/comp5329/train.csv] [--repeat 1]

Runs `inspect_data` (read the rows, build the label map, decode-check every image, read the
image headers and hash the files, tokenize every text) and times it. The first run of the
process is cold for captag (images that decoded are remembered per process, so a repeat skips
their decode check); the operating system's file cache may be warm. Prints a markdown table and
writes benchmarks/results/data.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CSV = HERE.parent.parent / "shared" / "datasets" / "comp5329" / "train.csv"


def measure(csv: Path, repeat: int) -> list[dict]:
    from captag.data import DataOptions
    from captag.training.inspect import inspect_data
    runs = []
    for number in range(1, repeat + 1):
        started = time.perf_counter()
        result = inspect_data(csv, DataOptions())
        images = result["images"]
        runs.append({"run": number, "cold": number == 1,
                     "seconds": round(time.perf_counter() - started, 2),
                     "rows": result["rows_read"], "labels": result["labels"]["distinct"],
                     "images_checked": images["checked"], "missing": images.get("missing", 0),
                     "undecodable": images.get("undecodable", 0),
                     "duplicate_rows": result["duplicates"]["rows"]["count"],
                     "duplicate_images": result["duplicates"]["images"]["count"],
                     "rows_cut": (result["text"] or {}).get("rows_cut")})
    return runs


def table(runs: list[dict]) -> str:
    lines = ["| run | rows | labels | images checked | missing | undecodable | seconds |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['run']}{' (cold)' if r['cold'] else ''} | {r['rows']} | {r['labels']} | "
              f"{r['images_checked']} | {r['missing']} | {r['undecodable']} | {r['seconds']} |"
              for r in runs]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--repeat", type=int, default=1, help="runs in this process (>1: warm)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "data.json")
    args = parser.parse_args()
    runs = measure(args.csv, args.repeat)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"csv": str(args.csv), "cpus": os.cpu_count(),
                                    "python": platform.python_version(), "target_seconds": 60,
                                    "runs": runs}, indent=1) + "\n")
    print(f"{args.csv} on {os.cpu_count()} CPUs\n")
    print(table(runs))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
