"""Benchmark of the two second tasks (issue 23 item 5): the default recipe on other data.

    python benchmarks/bench_tasks.py [--tasks-dir /tmp/captag-tasks] [--train 0:4000]
                                     [--test 16000:18000] [--only supercategories|tags|comp5329]
                                     [--work DIR] [--rows 40,20] [--seeds 0,1,2]
                                     [captag train options ...]

Builds the tasks with benchmarks/make_tasks.py (rows of train.csv: by default the dev rows
0-3999 to train on and 16000-17999 to score on), then for each task
  supercategories  task (a): imagefolder, 4 supercategory words (target samples-F1 >= 0.91,
                   stretch 0.92, training <= 6 min on 2 cores)
  tags             task (b): photo,title,tags CSV of COCO names (target: within 0.01 of comp5329)
  comp5329         the task (b) rows in COMP5329 form (ImageID,Labels,Caption, --images data/)
runs `captag train --data TRAIN --out RUN` with the default recipe (only the task's data options;
each task with its own cold feature cache) and `captag evaluate RUN --data TEST --json`, and
reports samples-F1, micro-F1, macro-F1, mAP, train seconds and predict samples/s (evaluate's
prediction pass: decoding, tokenizing and the model, over the scored rows).

`--seeds 0,1,2` trains each task once per seed (`captag train --seed S`: another validation
split, initialisation and order; each with a cold cache) and reports the mean, with the
standard deviation and every seed's samples-F1; the targets are checked on the mean. On 4,000
rows one seed's samples-F1 moves by about 0.003 from another's.

`--rows 40,20` keeps only the first 40 training and 20 scored rows, and other options (e.g.
`--image-size 64 --epochs 1`) go to `captag train` as they are: a smoke run, whose results go
to WORK/tasks.json instead of benchmarks/results/tasks.json unless --out says otherwise.
Prints a markdown table and writes the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # make_tasks beside this file

from bench_foundation import captag  # noqa: E402
from make_tasks import (DEFAULT_DATA, DEFAULT_OUT, DEFAULT_TEST, DEFAULT_TRAIN,  # noqa: E402
                        make_tasks, rows_option)

TASKS = ("supercategories", "tags", "comp5329")
TITLES = {"supercategories": "(a) imagefolder, supercategories",
          "tags": "(b) photo,title,tags CSV, COCO names",
          "comp5329": "(b) rows in COMP5329 form"}


def bench_task(name: str, task: dict, work: Path, train_options: list[str], seed: int) -> dict:
    """Train the default recipe (plus `train_options`) with `seed` on the task's train split,
    score the test split."""
    run = work / f"run-{name}-seed{seed}"
    env = {**os.environ, "CAPTAG_CACHE": str(work / f"cache-{name}-{time.time_ns()}")}
    options = task["options"]
    print(f"{name}, seed {seed}: training on {task['train_rows']} rows ...", flush=True)
    train_seconds, _ = captag("train", "--data", task["train"], "--out", str(run), *options,
                              "--seed", str(seed), *train_options, env=env)
    print(f"{name}: scoring {task['test_rows']} rows ...", flush=True)
    eval_seconds, out = captag("evaluate", str(run), "--data", task["test"], "--json", *options,
                               env=env)
    scores = json.loads(out)
    summary = json.loads((run / "summary.json").read_text())
    labels = json.loads((run / "labels.json").read_text())
    return {"task": name, "title": TITLES[name], "data": task["train"], "test": task["test"],
            "train_rows": task["train_rows"], "test_rows": scores["n_samples"],
            "labels": len(labels["ids"]),
            "f1_samples": scores["f1_samples"], "f1_micro": scores["f1_micro"],
            "f1_macro": scores["f1_macro"], "map": scores["map"],
            "threshold": scores["threshold"], "train_seconds": round(train_seconds, 1),
            "fit_seconds": summary.get("fit_seconds"),
            "val_f1_samples": summary["val"]["f1_samples"],
            "evaluate_seconds": round(eval_seconds, 1),
            "predict_samples_per_second": scores["samples_per_second"],
            "engine": scores["engine"], "model_mb": scores["model_mb"], "seed": seed,
            "run": str(run)}


MEANS = ("f1_samples", "f1_micro", "f1_macro", "map", "train_seconds", "fit_seconds",
         "val_f1_samples", "evaluate_seconds", "predict_samples_per_second")


def over_seeds(runs: list[dict]) -> dict:
    """One task's row: a single run as it is; several seeds' runs as their mean (and the
    samples-F1 standard deviation), with each run kept under "seeds"."""
    if len(runs) == 1:
        return runs[0]
    row = {k: v for k, v in runs[0].items() if k not in ("seed", "run", "threshold")}
    row.update({k: float(statistics.fmean(r[k] for r in runs)) for k in MEANS})
    row["f1_samples_std"] = statistics.stdev(r["f1_samples"] for r in runs)
    row["seeds"] = runs
    return row


def chosen_rows(data: Path, train: slice, test: slice, rows: str | None) -> tuple[list, list, dict]:
    """(training records, scored records, how tasks.json describes them): the slices of
    train.csv, the first of each with `rows` ("TRAIN,TEST"), and only the scored rows whose
    labels the training rows hold (evaluate refuses a label the run never learned; on the
    default rows every label is learned and no row is left out)."""
    from captag.data import read_records
    records = read_records(data / "train.csv")
    train_records, test_records = records[train], records[test]
    if rows:
        n_train, n_test = (int(n) for n in rows.split(","))
        train_records = train_records[:n_train]
    else:
        n_test = len(test_records)
    learned = {label for record in train_records for label in record.labels}
    scorable = [r for r in test_records if set(r.labels) <= learned]
    left_out = len(scorable) < len(test_records)
    test_records = scorable[:n_test]
    described = {"train": f"{train.start or 0}:{(train.start or 0) + len(train_records)}",
                 "test": f"{test.start or 0}:{test.stop}"
                         + (f", the first {len(test_records)} rows with learned labels"
                            if rows or left_out else "")}
    return train_records, test_records, described


def verdicts(rows: dict[str, dict], full: bool) -> dict:
    """The issue's targets, checked on the rows there are (full: the default rows)."""
    found = {}
    a = rows.get("supercategories")
    if a:
        found["supercategories_f1_samples_>=_0.91"] = a["f1_samples"] >= 0.91
        found["supercategories_train_<=_360_s"] = a["train_seconds"] <= 360
    if "tags" in rows and "comp5329" in rows:
        gap = rows["tags"]["f1_samples"] - rows["comp5329"]["f1_samples"]
        found["tags_minus_comp5329_f1_samples"] = round(gap, 4)
        found["tags_within_0.01_of_comp5329"] = abs(gap) <= 0.01
    if not full:
        found["note"] = "smoke run (fewer rows or other options): the targets do not apply"
    return found


def table(rows: list[dict]) -> str:
    lines = ["| task | labels | train rows | scored rows | samples-F1 | micro-F1 | macro-F1 | "
             "mAP | train s | predict samples/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['title']} | {r['labels']} | {r['train_rows']} | {r['test_rows']} | "
              f"{samples_f1(r)} | {r['f1_micro']:.4f} | {r['f1_macro']:.4f} | "
              f"{r['map']:.4f} | {r['train_seconds']:.0f} | {r['predict_samples_per_second']:.1f} |"
              for r in rows]
    return "\n".join(lines)


def samples_f1(row: dict) -> str:
    """The samples-F1 cell: one run's, or the mean ± std (and each seed's) over seeds."""
    if "seeds" not in row:
        return f"{row['f1_samples']:.4f}"
    each = ", ".join(f"{r['f1_samples']:.4f}" for r in row["seeds"])
    return f"{row['f1_samples']:.4f} ± {row['f1_samples_std']:.4f} ({each})"


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct seeds >= 0, e.g. 0,1,2")
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], allow_abbrev=False,
        epilog="Options it does not know go to `captag train` (e.g. --image-size 64).")
    parser.add_argument("--tasks-dir", type=Path,
                        help=f"where make_tasks builds the tasks (default {DEFAULT_OUT}, or "
                             "WORK/tasks for other rows, so a smoke run leaves them as they are)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the COMP5329 folder")
    parser.add_argument("--train", type=rows_option, default=DEFAULT_TRAIN,
                        help="rows of train.csv to train on, START:STOP (default 0:4000)")
    parser.add_argument("--test", type=rows_option, default=DEFAULT_TEST,
                        help="rows of train.csv to score on, START:STOP (default 16000:18000)")
    parser.add_argument("--rows", help="TRAIN,TEST: keep only the first rows of each (smoke run)")
    parser.add_argument("--only", choices=TASKS, action="append",
                        help="this task only (repeatable)")
    parser.add_argument("--seeds", type=seed_list, default=[0],
                        help="train each task once per seed and report the mean (default 0)")
    parser.add_argument("--work", type=Path, help="folder for runs and the cold caches")
    parser.add_argument("--out", type=Path, help="results file (default "
                        "benchmarks/results/tasks.json, or WORK/tasks.json for a smoke run)")
    args, train_options = parser.parse_known_args()
    if any(option.startswith("--seed") for option in train_options):
        parser.error("give the seed with --seeds (one run per seed), not --seed")
    train, test, described = chosen_rows(args.data, args.train, args.test, args.rows)
    work = args.work or Path(tempfile.mkdtemp(prefix="captag-bench-tasks-"))
    work.mkdir(parents=True, exist_ok=True)
    only = args.only or list(TASKS)
    default_rows = not args.rows and (args.train, args.test) == (DEFAULT_TRAIN, DEFAULT_TEST)
    tasks_dir = args.tasks_dir or (DEFAULT_OUT if default_rows else work / "tasks")
    built = make_tasks(tasks_dir, train, test, args.data,
                       comp5329="comp5329" in only,
                       tasks=[t for t in ("supercategories", "tags") if t in only],
                       described=described)
    rows = {name: over_seeds([bench_task(name, built[name], work, train_options, seed)
                              for seed in args.seeds]) for name in only}
    full = default_rows and not train_options
    result = {"rows": built["rows"], "train_options": train_options, "seeds": args.seeds,
              "full": full,
              "tasks": rows, "targets": verdicts(rows, full),
              "command": " ".join(["python", "benchmarks/bench_tasks.py", *sys.argv[1:]]),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()}}
    out = args.out or (HERE / "results" / "tasks.json" if full else work / "tasks.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\ntrain rows {built['rows']['train']}, scored rows {built['rows']['test']} of "
          f"train.csv; {os.cpu_count()} CPUs; recipe: default"
          + (f" with {' '.join(train_options)}" if train_options else "") + "\n")
    print(table(list(rows.values())))
    print("\n" + json.dumps(result["targets"]))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
