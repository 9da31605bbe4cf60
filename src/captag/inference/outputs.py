"""Prediction files: a Kaggle submission for COMP5329 data, else the labels in the data's own
form (a delimited string, a JSON list, or one 0/1 column per label), or every label's
probability. The output's extension chooses CSV, TSV or JSON Lines; files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from captag.data import Data, LabelForm, LabelMap
from captag.data.sources import label_name
from captag.errors import OutputError
from captag.files import ensure_parent, write_text

DEFAULT_FORM = LabelForm("delimited", "labels", "|")


def check_output(path) -> Path:
    """The output file's path, once its folder exists and is writable: OutputError if `path`
    is a folder or its folder cannot be created or written."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--output {path} is a folder; give the file to write, e.g. "
                          f"{path / 'submission.csv'}.")
    ensure_parent(path, "--output")
    return path


def write_submission(path, image_ids, predicted: np.ndarray, labels: LabelMap) -> None:
    """A Kaggle submission: ImageID,Labels with labels space-separated (written atomically)."""
    _write_table(path, ["ImageID", "Labels"],
                 [[image_id, " ".join(str(label) for label in labels.decode(row))]
                  for image_id, row in zip(image_ids, predicted)])


def write_predictions(path, data: Data, predicted: np.ndarray, labels: LabelMap,
                      form: LabelForm | None) -> None:
    """Each row's key (its image path, or its line) and its predicted labels, in `form`."""
    if data.is_comp5329:
        write_submission(path, [r.image_id for r in data.records], predicted, labels)
        return
    form, key, jsonl = form or DEFAULT_FORM, _key_column(data), _is_jsonl(path)
    rows = []
    for record, row in zip(data.records, predicted):
        chosen = [str(label) for label in labels.decode(row)]
        rows.append({key: _key(data, record), **_labels(chosen, form, jsonl)})
    if jsonl:
        write_text(check_output(path), "".join(json.dumps(row, ensure_ascii=False) + "\n"
                                               for row in rows))
    else:
        _write_table(path, list(rows[0]) if rows else [key], [list(row.values()) for row in rows])


def write_probabilities(path, data: Data, probs: np.ndarray, labels: LabelMap) -> None:
    """Each row's key, then one column per label with its probability."""
    key = "ImageID" if data.is_comp5329 else _key_column(data)
    _write_table(path, [key, *map(str, labels.names)],
                 [[_key(data, record), *(f"{p:.6f}" for p in row)]
                  for record, row in zip(data.records, probs)])


def _key_column(data: Data) -> str:
    return data.image_column or "line"


def _key(data: Data, record):
    return record.image_id if data.image_column else record.line


def _labels(chosen: list[str], form: LabelForm, jsonl: bool) -> dict:
    if form.kind == "columns":
        on = set(chosen)
        return {column: int(label_name(column, form.prefix) in on) for column in form.columns}
    if form.kind == "list":
        return {form.column: chosen if jsonl else "|".join(chosen)}
    return {form.column: form.sep.join(chosen)}


def _is_jsonl(path) -> bool:
    return Path(path).suffix.lower() in (".jsonl", ".ndjson")


def _write_table(path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t" if Path(path).suffix.lower() == ".tsv" else ",")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(check_output(path), text.getvalue())
