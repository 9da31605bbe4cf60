"""Two second tasks built from COMP5329 rows (issue 23 item 3), written outside the repository.

    python benchmarks/make_tasks.py [--out /tmp/captag-tasks] [--train 0:4000]
                                    [--test 16000:18000] [--data ../shared/datasets/comp5329]
                                    [--link symlink|hardlink|copy] [--comp5329]

Rows are slices of train.csv (START:STOP, 0-based records); by default the dev rows 0-3999 to
train on and 16000-17999 to score on. Layout of --out:

    supercategories/                 task (a): two Hugging Face imagefolders, one per split
      train/metadata.jsonl           {"file_name": "images/4/3/1234.jpg", "text": "...",
      train/images/<d>/<d>/<id>.jpg   "labels": ["person", "vehicle"]}
      test/metadata.jsonl            the same for the scored rows
      test/images/...
    tags/                            task (b): CSVs as pandas writes them (csv.writer, minimal
      train.csv                      quoting), columns photo,title,tags, with tags such as
      test.csv                       "traffic light|car"; photo is relative to the CSV:
      photos/<id>.jpg                "photos/01234.jpg"
    comp5329/                        (--comp5329) the task (b) rows in COMP5329 form
      train.csv, test.csv            (ImageID,Labels,Caption); images: --images DATA/data
    tasks.json                       what was built: rows, counts and the captag options of each

Task (a)'s labels are the COCO supercategories as words: person (1), vehicle (2-9), outdoor
(traffic light, fire hydrant, stop sign, parking meter, bench) and animal (bird, cat, dog,
horse). Its images sit in nested folders by the last two digits of the ID (1234 -> 4/3/), and
every 5th row's image is re-saved as PNG (lossless, so the pixels are the JPEG's). Task (b)'s
labels are the COCO names. Its photos are zero-padded to 5 digits, so that their names sort as
their numbers do: the train/validation split then holds the same rows as for the COMP5329 file
(captag sorts keys that are not plain numbers by name). JPEGs are symlinked by default (captag
reads through symlinks); `--link hardlink` or `copy` if you move the folder elsewhere.

From Python: `make_tasks(out_dir, train=slice(0, 24), test=records[100:112], ...)`, where each of
train and test is a slice of train.csv's records or a list of `captag.data.Record`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "comp5329"
DEFAULT_OUT = Path("/tmp/captag-tasks")
DEFAULT_TRAIN, DEFAULT_TEST = slice(0, 4000), slice(16000, 18000)  # rows of train.csv

SUPERCATEGORY = {1: "person", **{i: "vehicle" for i in range(2, 10)},
                 **{i: "outdoor" for i in (10, 11, 13, 14, 15)},
                 **{i: "animal" for i in (16, 17, 18, 19)}}
SUPERCATEGORIES = ("person", "vehicle", "outdoor", "animal")
PNG_EVERY = 5
# the captag data options that read each task (the rest is found from the data)
OPTIONS = {"supercategories": [], "tags": ["--image-column", "photo"]}


def supercategories(labels: Sequence[int]) -> list[str]:
    """A row's COCO label IDs as supercategory words, each once, in SUPERCATEGORIES order."""
    found = {SUPERCATEGORY[label] for label in labels}
    return [name for name in SUPERCATEGORIES if name in found]


def coco_names(labels: Sequence[int]) -> list[str]:
    from captag.data.labels import LABEL_NAMES
    return [LABEL_NAMES[label] for label in labels]


def place(source: Path, target: Path, link: str) -> None:
    """`target` made to hold `source`'s bytes: a symlink, a hard link or a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    if link == "symlink":
        target.symlink_to(source.resolve())
    elif link == "hardlink":
        try:
            os.link(source, target)
        except OSError:  # another file system, or not allowed: copy
            shutil.copyfile(source, target)
    else:
        shutil.copyfile(source, target)


def nested(image_id: str, suffix: str) -> str:
    """images/<last digit>/<last but one>/<id><suffix>: 1234.jpg -> images/4/3/1234.png."""
    stem = Path(image_id).stem
    digits = stem.zfill(2)
    return f"images/{digits[-1]}/{digits[-2]}/{stem}{suffix}"


def write_imagefolder(folder: Path, records: Sequence, images: Path, link: str) -> int:
    """Task (a): folder/metadata.jsonl and folder/images/...; returns the PNGs written."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    lines, pngs = [], 0
    for number, record in enumerate(records):
        source = images / record.image_id
        if number % PNG_EVERY == PNG_EVERY - 1:
            path = nested(record.image_id, ".png")
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            with Image.open(source) as image:
                image.convert("RGB").save(folder / path)
            pngs += 1
        else:
            path = nested(record.image_id, ".jpg")
            place(source, folder / path, link)
        lines.append(json.dumps({"file_name": path, "text": record.caption,
                                 "labels": supercategories(record.labels)}) + "\n")
    (folder / "metadata.jsonl").write_text("".join(lines), encoding="utf-8")
    return pngs


def photo_path(image_id: str) -> str:
    return f"photos/{Path(image_id).stem.zfill(5)}.jpg"


def write_tags_csv(path: Path, records: Sequence, images: Path, link: str) -> Path:
    """Task (b): a photo,title,tags CSV as pandas writes it, its photos in photos/ beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)  # minimal quoting, "\r\n" line ends: what pandas writes
        writer.writerow(["photo", "title", "tags"])
        for record in records:
            photo = photo_path(record.image_id)
            place(images / record.image_id, path.parent / photo, link)
            writer.writerow([photo, record.caption, "|".join(coco_names(record.labels))])
    return path


def write_comp5329(path: Path, records: Sequence) -> Path:
    """The records as a standard-CSV COMP5329 file (ImageID,Labels,Caption)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["ImageID", "Labels", "Caption"])
        for record in records:
            writer.writerow([record.image_id, " ".join(map(str, record.labels)), record.caption])
    return path


def pick(rows, records: list | None, source: Path) -> tuple[list, list]:
    """(the chosen records, records read) for `rows`: a slice of the source's records or a list
    of records."""
    if isinstance(rows, slice):
        if records is None:
            from captag.data import read_records
            records = read_records(source)
        return records[rows], records
    return list(rows), records


def describe(rows) -> str:
    if isinstance(rows, slice):
        return f"{rows.start or 0}:{rows.stop}"
    return "given records"


def make_tasks(out_dir: str | Path = DEFAULT_OUT, train=DEFAULT_TRAIN, test=DEFAULT_TEST,
               data: str | Path = DEFAULT_DATA, link: str = "symlink", comp5329: bool = False,
               tasks: Sequence[str] = ("supercategories", "tags"),
               described: dict | None = None) -> dict:
    """Build the tasks into `out_dir` (outside the repository) and return tasks.json's content:
    {"supercategories": {"train": PATH, "test": PATH, "options": [...], "labels": [...], ...},
    "tags": {...}, "comp5329": {...} (when asked)}. `train` and `test` are slices of data's
    train.csv records or lists of records (`described`: what to call them in tasks.json,
    {"train": ..., "test": ...})."""
    from captag.data.labels import LABEL_NAMES
    out, data = Path(out_dir).resolve(), Path(data)
    repo = HERE.parent.resolve()
    if out == repo or repo in out.parents:
        raise SystemExit(f"{out} is inside the repository {repo}; build the tasks outside it.")
    if link not in ("symlink", "hardlink", "copy"):
        raise ValueError(f"link must be symlink, hardlink or copy, not {link!r}")
    source, images = data / "train.csv", data / "data"
    train_records, cache = pick(train, None, source)
    test_records, _ = pick(test, cache, source)
    shared = {r.image_id for r in train_records} & {r.image_id for r in test_records}
    if shared:
        raise ValueError(f"{len(shared)} rows are in both train and test, e.g. {sorted(shared)[0]}")
    split_rows = {"train": train_records, "test": test_records}
    rows_said = described or {"train": describe(train), "test": describe(test)}
    built: dict = {"source": str(source), "rows": rows_said, "link": link}
    if "supercategories" in tasks:
        folder = out / "supercategories"
        if folder.exists():
            shutil.rmtree(folder)
        task = {"format": "imagefolder", "options": OPTIONS["supercategories"],
                "labels": sorted(SUPERCATEGORIES)}
        for split, records in split_rows.items():
            pngs = write_imagefolder(folder / split, records, images, link)
            task[split] = str(folder / split)
            task[f"{split}_rows"], task[f"{split}_pngs"] = len(records), pngs
        built["supercategories"] = task
    if "tags" in tasks:
        folder = out / "tags"
        if folder.exists():
            shutil.rmtree(folder)
        task = {"format": "csv", "options": OPTIONS["tags"], "labels": sorted(LABEL_NAMES.values())}
        for split, records in split_rows.items():
            task[split] = str(write_tags_csv(folder / f"{split}.csv", records, images, link))
            task[f"{split}_rows"] = len(records)
        built["tags"] = task
    if comp5329:
        folder = out / "comp5329"
        task = {"format": "comp5329", "options": ["--images", str(images.resolve())],
                "labels": [LABEL_NAMES[i] for i in sorted(LABEL_NAMES)]}
        for split, records in split_rows.items():
            task[split] = str(write_comp5329(folder / f"{split}.csv", records))
            task[f"{split}_rows"] = len(records)
        built["comp5329"] = task
    out.mkdir(parents=True, exist_ok=True)
    (out / "tasks.json").write_text(json.dumps(built, indent=1) + "\n")
    return built


def rows_option(text: str) -> slice:
    start, sep, stop = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not START:STOP")
    return slice(int(start or 0), int(stop))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder to build into, outside the repository "
                             f"(default {DEFAULT_OUT})")
    parser.add_argument("--train", type=rows_option, default=DEFAULT_TRAIN,
                        help="rows of train.csv to train on, START:STOP (default 0:4000)")
    parser.add_argument("--test", type=rows_option, default=DEFAULT_TEST,
                        help="rows of train.csv to score on, START:STOP (default 16000:18000)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the COMP5329 folder (train.csv and data/)")
    parser.add_argument("--link", choices=["symlink", "hardlink", "copy"], default="symlink",
                        help="how JPEGs get into the tasks (default symlink)")
    parser.add_argument("--comp5329", action="store_true",
                        help="also write the rows in COMP5329 form (comp5329/train.csv, test.csv)")
    args = parser.parse_args(argv)
    built = make_tasks(args.out, args.train, args.test, args.data, args.link, args.comp5329)
    for name in ("supercategories", "tags", "comp5329"):
        if name in built:
            task = built[name]
            options = " ".join(task["options"])
            print(f"{name}: train {task['train']} ({task['train_rows']} rows), "
                  f"test {task['test']} ({task['test_rows']} rows)"
                  + (f"; options: {options}" if options else ""))
    print(f"written {Path(args.out).resolve() / 'tasks.json'}")


if __name__ == "__main__":
    main()
