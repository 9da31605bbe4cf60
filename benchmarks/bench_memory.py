"""Benchmark of memory (issue 24): the peak resident memory of each job, sampled with psutil.

    python benchmarks/bench_memory.py [--only train|predict|int8|serve|features] [--work DIR]
                                      [--data ../shared/datasets/comp5329]
                                      [--feature-rows 18000,50000] [captag train options ...]

train     `captag train --data train.csv` with the defaults and a cold feature cache
          (target: peak <= 3 GiB, validation samples-F1 and train time as before)
predict   `captag predict RUN` of 2,000 rows of train.csv (without labels), from the run folder
int8      the same from the run's `captag export --int8` folder (target <= 1 GiB)
serve     `captag serve` of the int8 export under load (benchmarks/load_test.py: 500 requests,
          32 at once)
features  the feature pass alone (image and text activations into a cold cache) over rows of
          train.csv repeated under new file names (symlinks), for each count of --feature-rows
          (target: the peak at 50,000 rows within 10% of the peak at 18,000)

Every job runs as a child process, and a thread samples its memory: "main" is the peak resident
set (RSS) of the child alone, sampled every 0.1 s; "peak" is the sum of the proportional set
sizes (PSS) of the child and all its descendants at the worst moment (pages they share, such
as the libraries of data-loader workers, count once), sampled every 3 s (reading a large
process's PSS takes the kernel long enough to slow the job if done often). Later jobs use the
train job's run folder (it is trained first when missing). Options it does not know go to
`captag train` and to the feature pass (e.g. --image-size 64 for a smoke run, whose results go
to WORK/memory.json). Prints a markdown table and writes
benchmarks/results/memory.json, where the jobs of this run replace the same jobs of an earlier
one and the others stay, each with the command that measured it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "comp5329"
JOBS = ("train", "predict", "int8", "serve", "features")
GIB = 1024 ** 3


class Peak(threading.Thread):
    """The peak RSS of a process alone, sampled every `every_s`, and the peak memory of the
    process with its descendants (the sum of their proportional set sizes, so that pages they
    share count once), sampled every `pss_every` samples: reading a large process's PSS takes
    the kernel tens of milliseconds, which sampled often would slow the job measured."""

    def __init__(self, pid: int, every_s: float = 0.1, pss_every: int = 30):
        super().__init__(daemon=True)
        self.process, self.every_s, self.pss_every = psutil.Process(pid), every_s, pss_every
        self.total = self.main = self.samples = 0
        self.stop = threading.Event()

    def sample(self) -> None:
        try:
            self.main = max(self.main, self.process.memory_info().rss)
            if self.samples % self.pss_every == 0:
                tree = [self.process, *self.process.children(recursive=True)]
                self.total = max(self.total, sum(map(_pss, tree)))
        except psutil.NoSuchProcess:
            return
        self.samples += 1

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.sample()


def _pss(process: psutil.Process) -> int:
    """A process's proportional set size in bytes (0 once it has gone)."""
    try:
        with open(f"/proc/{process.pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return 0


def sampled(command: list[str], env: dict) -> dict:
    """Run `command`; its seconds, stdout and peak memory (GiB)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    peak = Peak(child.pid)
    peak.start()
    out, err = child.communicate()
    peak.stop.set()
    peak.join()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-3000:]}")
    return {"seconds": round(seconds, 1), "peak_gib": round(peak.total / GIB, 3),
            "main_gib": round(peak.main / GIB, 3), "stdout": out}


def captag(*args: str, env: dict) -> dict:
    return sampled([sys.executable, "-m", "captag.cli", "-q", *args], env)


def job_train(data: Path, work: Path, env: dict, options: list[str]) -> dict:
    run = work / "run"
    found = captag("train", "--data", str(data / "train.csv"), "--out", str(run), *options, env=env)
    summary = json.loads((run / "summary.json").read_text())
    return {"job": "train", "rows": 18000, **_measures(found),
            "val_f1_samples": summary["val"]["f1_samples"],
            "features_seconds": summary.get("features_seconds"),
            "fit_seconds": summary.get("fit_seconds"), "target": "peak <= 3 GiB"}


def test_rows(data: Path, work: Path, n: int = 2000) -> Path:
    """The last `n` rows of train.csv without their labels, written as standard CSV (test.csv
    comes with only some of its images)."""
    from captag.data import read_data
    rows = read_data(data / "train.csv").records[-n:]
    path = work / f"rows-{n}.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageID", "Caption"])
        writer.writerows([r.image_id, r.caption] for r in rows)
    return path


def job_predict(folder: Path, name: str, data: Path, work: Path, env: dict, target: str) -> dict:
    rows = test_rows(data, work)
    found = captag("predict", str(folder), "--data", str(rows), "--images", str(data / "data"),
                   "--output", str(work / f"predicted-{name}.csv"), env=env)
    return {"job": name, "rows": 2000, **_measures(found), "target": target}


def int8_export(run: Path, data: Path, work: Path, env: dict) -> Path:
    export = work / "export-int8"
    if not (export / "model.yaml").exists():
        captag("export", str(run), "--int8", "--out", str(export), "--data",
               str(data / "train.csv"), env=env)
    return export


def job_serve(export: Path, work: Path) -> dict:
    out = work / "load_test.json"
    subprocess.run([sys.executable, str(HERE / "load_test.py"), str(export), "--requests", "500",
                    "--concurrency", "32", "--out", str(out)], check=True, capture_output=True)
    found = json.loads(out.read_text())
    return {"job": "serve", "rows": found["requests"], "seconds": found["seconds"],
            "peak_gib": round(found["server_peak_rss_mb"] / 1024, 3), "main_gib": None,
            "requests_per_second": found["requests_per_second"], "target": ""}


def synthetic_csv(data: Path, work: Path, rows: int) -> Path:
    """`rows` rows of train.csv repeated, each image under a new file name (a symlink)."""
    from captag.data import read_records
    records = read_records(data / "train.csv")
    folder = work / f"synthetic-{rows}"
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    path = folder / "data.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageID", "Labels", "Caption"])
        for i in range(rows):
            record = records[i % len(records)]
            name = f"s{i:06d}.jpg"
            if not (images / name).exists():
                (images / name).symlink_to((data / "data" / record.image_id).resolve())
            writer.writerow([name, " ".join(map(str, record.labels)), record.caption])
    return path


def feature_pass(path: str, images: str, options: list[str]) -> None:
    """(In the child) the lower-stage activations of every row of `path`, into the cache."""
    from captag.cli import _train_config, build_parser
    from captag.data import DataOptions, read_data
    from captag.models.registry import model_from_config
    from captag.training.cache import FeatureCache
    from captag.training.features import image_activations, text_activations
    cfg = _train_config(build_parser().parse_args(["train", "--data", path, "--images", images,
                                                   *options]))
    data = read_data(path, DataOptions.of(cfg))
    model = model_from_config(cfg, num_labels=18)
    cache = FeatureCache(cfg.cache_dir)
    image_activations(model, data.records, Path(images), cfg.image_size, cache,
                      num_workers=cfg.num_workers, progress=False)
    text_activations(model, [r.caption for r in data.records], cache, progress=False)


def job_features(data: Path, work: Path, env: dict, rows: int, options: list[str]) -> dict:
    path = synthetic_csv(data, work, rows)
    cold = {**env, "CAPTAG_CACHE": str(work / f"cache-features-{rows}-{time.time_ns()}")}
    found = sampled([sys.executable, __file__, "--feature-pass", str(path),
                     str(path.parent / "images"), *options], cold)
    return {"job": f"features {rows}", "rows": rows, **_measures(found),
            "rows_per_second": round(rows / found["seconds"], 1), "target": ""}


def _measures(found: dict) -> dict:
    return {key: found[key] for key in ("seconds", "peak_gib", "main_gib")}


def table(rows: list[dict]) -> str:
    lines = ["| job | rows | peak PSS (GiB, with children) | peak RSS, main process (GiB) | seconds | "
             "target |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['job']} | {r['rows']} | {r['peak_gib']:.2f} | "
              f"{'' if r['main_gib'] is None else format(r['main_gib'], '.2f')} | "
              f"{r['seconds']:.0f} | {r['target']} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--feature-pass"]:
        return feature_pass(sys.argv[2], sys.argv[3], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--only", choices=JOBS, action="append", help="this job (repeatable)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the COMP5329 folder")
    parser.add_argument("--work", type=Path, help="folder for runs, caches and synthetic data")
    parser.add_argument("--feature-rows", default="18000,50000",
                        help="row counts of the features job (default 18000,50000)")
    parser.add_argument("--out", type=Path, help="results file")
    args, options = parser.parse_known_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="captag-bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CAPTAG_CACHE": str(work / "cache")}
    rows = []
    for job in args.only or JOBS:
        print(f"{job} ...", flush=True)
        rows += run_job(job, args, work, env, options)
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    command = " ".join(["python", "benchmarks/bench_memory.py", *sys.argv[1:]])
    for row in rows:
        row.update(command=command, date=time.strftime("%Y-%m-%d"))
    out = args.out or (work / "memory.json" if options else HERE / "results" / "memory.json")
    rows = merged(out, rows)
    result = {"jobs": rows, "train_options": options,
              "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
                          "platform": platform.platform(), "python": platform.python_version()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n" + table(rows) + f"\n\nwritten {out}")


def merged(out: Path, rows: list[dict]) -> list[dict]:
    """The rows of `out` (an earlier run's results) that this run did not measure, then this
    run's rows: each row keeps the command that measured it."""
    if not out.exists():
        return rows
    done = {row["job"] for row in rows}
    return [row for row in json.loads(out.read_text())["jobs"] if row["job"] not in done] + rows


def run_job(job: str, args, work: Path, env: dict, options: list[str]) -> list[dict]:
    run = work / "run"
    if job == "train":
        return [job_train(args.data, work, env, options)]
    if job == "features":
        return [job_features(args.data, work, env, int(n), options)
                for n in args.feature_rows.split(",")]
    if not (run / "summary.json").exists():
        job_train(args.data, work, env, options)
    if job == "predict":
        return [job_predict(run, "predict", args.data, work, env, "")]
    export = int8_export(run, args.data, work, env)
    if job == "int8":
        return [job_predict(export, "predict --int8 export", args.data, work, env, "<= 1 GiB")]
    return [job_serve(export, work)]


if __name__ == "__main__":
    main()
