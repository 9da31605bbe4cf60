"""Reader for the captioned-image CSVs, whose captions are quoted but not escaped.

A file starts with the header `ImageID,Labels,Caption` (labelled) or `ImageID,Caption`
(unlabelled). Each record starts on a line that matches `^\\d+\\.jpg,` and runs until the
next such line; its caption is everything between the first and the last double quote,
so it may hold unescaped quotes, commas and line breaks.

A line inside a caption that looks like the start of a record (`ID,LABELS,"...` with numeric
labels, or `ID,"...` in an unlabelled file, ID one token) but whose ID is not `<digits>.jpg`
stops the read: folding it into the previous caption would silently lose a row.

A file with one of these headers that is valid standard CSV (fields quoted only when needed,
quotes doubled inside them, as pandas and the `csv` module write it) is read as standard CSV,
so it gives the same records as the original; its image IDs may then be any relative path.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from captag.errors import DataFormatError, DataNotFoundError

from .labels import LABEL_IDS

LABELLED_HEADER = "ImageID,Labels,Caption"
UNLABELLED_HEADER = "ImageID,Caption"
RECORD_START = re.compile(r"(\d+\.jpg),")
# A line shaped like a record start, whatever its ID: labelled, then unlabelled files.
RECORD_SHAPE = {True: re.compile(r'([^\s,"]+),\d+(?: +\d+)*,"'), False: re.compile(r'([^\s,"]+),"')}


@dataclass(frozen=True)
class Record:
    image_id: str  # the image's path relative to the image folder, e.g. "9084.jpg" ("": none)
    caption: str
    labels: tuple | None  # label IDs (COMP5329) or label names; None for unlabelled files
    line: int  # 1-based line (or row) number in the file where the record starts
    key: str = ""  # what the train/validation split keeps: the image ID unless given

    def __post_init__(self):
        if not self.key:
            object.__setattr__(self, "key", self.image_id)


def read_records(path: str | Path, label_ids: Sequence[int] = LABEL_IDS) -> list[Record]:
    """Read every record of a labelled or unlabelled CSV file, in file order."""
    text = _read_text(path)
    lines = text.split("\n")
    labelled = _check_header(path, lines[0])
    rows = _standard_rows(text, labelled)
    if rows is None:
        rows = [_split_fields(path, line, chunk, labelled)
                for line, chunk in _group_lines(path, lines, labelled)]
    if not rows:
        raise DataFormatError(path, 1, "the file has no records, only the header",
                              "Add records below the header, or pass the CSV that holds the data.")
    valid = frozenset(label_ids)
    records, first_line = [], {}
    for line, image_id, labels, caption in rows:
        record = _record(path, line, image_id, labels, caption, valid)
        if record.image_id in first_line:
            raise DataFormatError(
                path, line, f"duplicate image ID; it first appears on line {first_line[record.image_id]}",
                "Each image ID must appear once: remove or rename one of the two records.", record.image_id)
        first_line[record.image_id] = line
        records.append(record)
    return records


def is_labelled(records: Sequence[Record]) -> bool:
    """True when there are records and every one has labels."""
    return bool(records) and all(r.labels is not None for r in records)


def require_labels(records: Sequence[Record], path: str | Path, purpose: str) -> None:
    """Stop with a DataFormatError (at line 1, the header) unless every record has labels.

    `purpose` says what needs them, e.g. "training" or "evaluate": the message reads
    "<path>:1: the file has no Labels column, and <purpose> needs labelled rows. ..."."""
    if any(r.labels is None for r in records):
        raise DataFormatError(path, 1, f"the file has no Labels column, and {purpose} needs labelled rows",
                              f"Use a CSV with the header {LABELLED_HEADER!r}; "
                              "`captag predict` is the command for unlabelled rows.")


def _read_text(path) -> str:
    path = Path(path)
    if path.is_dir():
        raise DataNotFoundError(f"{path} is a folder, not a CSV file. Pass the path of the CSV file itself.")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataNotFoundError(f"CSV file {path} does not exist. Check the path.") from None
    except OSError as exc:
        raise DataNotFoundError(f"CSV file {path} cannot be read: {exc.strerror or exc}.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(path, line, f"the file is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                              "Save the file as UTF-8 text.") from None
    return text.replace("\r\n", "\n")


def _check_header(path, first_line: str) -> bool:
    header = first_line.strip()
    if header == LABELLED_HEADER:
        return True
    if header == UNLABELLED_HEADER:
        return False
    raise DataFormatError(path, 1, f"expected the header {LABELLED_HEADER!r} or {UNLABELLED_HEADER!r}, got {_clip(header)}",
                          "Put one of these headers on the first line of the file.")


def _group_lines(path, lines: list[str], labelled: bool) -> list[tuple[int, str]]:
    """(start line, text) for each record; text keeps the line breaks inside the record."""
    chunks, start, body = [], None, []
    for number, line in enumerate(lines[1:], start=2):
        _check_id(path, number, line, labelled)
        if RECORD_START.match(line):
            if start is not None:
                chunks.append((start, "\n".join(body)))
            start, body = number, [line]
        elif start is not None:
            body.append(line)
        elif line.strip():
            raise DataFormatError(path, number, f"expected a record starting with 'ID.jpg,', got {_clip(line)}",
                                  "Remove this line or start it with the image ID.")
    if start is not None:
        chunks.append((start, "\n".join(body)))
    return chunks


def _standard_rows(text: str, labelled: bool) -> list[tuple] | None:
    """(line, image ID, labels field or None, caption) for each row of a file that is valid
    standard CSV with the header's number of fields; None for any other file (such as the
    original, whose quotes inside captions are not doubled)."""
    reader = csv.reader(io.StringIO(text), strict=True)
    width, rows, start = 3 if labelled else 2, [], 1
    try:
        for row in reader:
            if row and reader.line_num > 1:
                if len(row) != width:
                    return None
                rows.append((start, row[0], row[1] if labelled else None, row[-1]))
            start = reader.line_num + 1
    except csv.Error:
        return None
    return rows


def _check_id(path, number: int, line: str, labelled: bool) -> None:
    """Stop at a line shaped like a record start whose image ID is not `<digits>.jpg`."""
    shape = RECORD_SHAPE[labelled].match(line)
    if shape and not RECORD_START.match(line):
        image_id = shape.group(1)
        raise DataFormatError(path, number, f"the image ID {image_id!r} is not valid",
                              "Image IDs look like 123.jpg (digits, then .jpg in lower case): "
                              "rename the image and its ID to match.", image_id)


def _split_fields(path, line: int, text: str, labelled: bool) -> tuple:
    """(line, image ID, labels field or None, caption) of a record in the original layout:
    the caption is everything between its first and its last double quote."""
    image_id, _, rest = text.partition(",")
    layout = 'ID,LABELS,"CAPTION"' if labelled else 'ID,"CAPTION"'

    def fail(problem: str) -> DataFormatError:
        return DataFormatError(path, line, problem, f"Write the record as {layout}.", image_id)

    labels = None
    if labelled:
        if rest.startswith('"'):
            raise fail("the Labels field is missing")
        comma = rest.find(",")
        if comma < 0 or '"' in rest[:comma] or "\n" in rest[:comma]:
            raise fail(f"cannot find the Labels and Caption fields in {_clip(text)}")
        labels, rest = rest[:comma], rest[comma + 1:]
    if not rest.startswith('"'):
        raise fail(f"the caption does not start with a double quote: {_clip(text)}")
    end = rest.rfind('"')
    if end == 0:
        raise fail("the caption has no closing double quote")
    if rest[end + 1:].strip():
        raise fail(f"unexpected text after the caption's closing quote: {_clip(rest[end + 1:].strip())}")
    return line, image_id, labels, rest[1:end]


def _record(path, line: int, image_id: str, labels: str | None, caption: str,
            valid: frozenset[int]) -> Record:
    def fail(problem: str, fix: str) -> DataFormatError:
        return DataFormatError(path, line, problem, fix, image_id)

    if not image_id.strip():
        raise fail("the ImageID field is empty", "Give every record the file name of its image.")
    if not caption.strip():
        raise fail("the caption is empty", "Give every record a non-empty caption, or remove the record.")
    return Record(image_id, caption, None if labels is None else _parse_labels(labels, valid, fail),
                  line)


def _parse_labels(field: str, valid: frozenset[int], fail) -> tuple[int, ...]:
    def bad(problem: str) -> DataFormatError:
        allowed = ", ".join(map(str, sorted(valid)))
        return fail(problem, f"Labels are space-separated integers among {allowed}; "
                             "fix the Labels field or pass the label set as label_ids.")

    tokens = field.split()
    if not tokens:
        raise bad("the Labels field is empty")
    labels = []
    for token in tokens:
        if not (token.isascii() and token.isdigit()) or int(token) not in valid:
            raise bad(f"label {token!r} is not a known label")
        if int(token) in labels:
            raise bad(f"label {token} is listed twice")
        labels.append(int(token))
    return tuple(labels)


def _clip(text: str, width: int = 60) -> str:
    first = text.split("\n", 1)[0]
    return repr(first if len(first) <= width and "\n" not in text else first[:width] + "...")
