"""Tables: the rows of a CSV, TSV, JSON Lines or Parquet file, each with its line (or row)
number, and which of these formats a path holds.

A format is chosen from what the path is: a folder is a Hugging Face `imagefolder` (its
`metadata.jsonl` or `metadata.csv`), a CSV whose first line is the COMP5329 header is
`comp5329`, and otherwise the file's extension decides. Every problem is a `DataFormatError`
or `DataNotFoundError` that names the file (and the line).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from captag.config import DATA_FORMATS
from captag.errors import DataFormatError, DataNotFoundError

EXTENSIONS = {".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
              ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
METADATA = ("metadata.jsonl", "metadata.csv")
COMP5329_HEADERS = ("ImageID,Labels,Caption", "ImageID,Caption")
DELIMITERS = ",\t;|"


@dataclass
class Table:
    """A file's rows as {column: value}, with the 1-based line (or Parquet row) of each."""

    path: Path
    format: str
    columns: list[str]
    rows: list[dict]
    lines: list[int]
    delimiter: str | None = None


def data_file(path: str | Path, format: str | None = None) -> tuple[Path, str]:
    """(the file to read, its format): a folder gives its imagefolder metadata file."""
    path = Path(path)
    if path.is_dir():
        if format not in (None, "imagefolder"):
            raise DataNotFoundError(f"{path} is a folder, but --format {format} reads a file: "
                                    "pass the data file itself.")
        return _metadata(path), "imagefolder"
    if not path.exists():
        raise DataNotFoundError(f"Data file {path} does not exist. Check the path.")
    if format:
        return path, format
    if path.name in METADATA:
        return path, "imagefolder"
    if _first_line(path) in COMP5329_HEADERS:
        return path, "comp5329"
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise DataFormatError(path, 1, f"cannot tell the format of a {path.suffix or 'nameless'} "
                              "file", f"Pass --format, one of {', '.join(DATA_FORMATS)}.")
    return path, kind


def _metadata(folder: Path) -> Path:
    found = [folder / name for name in METADATA if (folder / name).is_file()]
    if len(found) == 1:
        return found[0]
    if found:
        raise DataFormatError(folder, 1, "the folder holds both metadata.jsonl and metadata.csv",
                              "Keep one of them.")
    raise DataNotFoundError(f"{folder} is a folder without metadata.jsonl or metadata.csv: an "
                            "imagefolder names each image in its metadata file's file_name "
                            "column. Pass the data file itself, or add the metadata file.")


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as file:
            return file.readline().strip()
    except OSError as error:
        raise DataNotFoundError(f"Data file {path} cannot be read: {error.strerror or error}.") from None


def read_table(path: Path, format: str, delimiter: str | None = None) -> Table:
    """The rows of a csv, tsv, jsonl or parquet file (imagefolder: by its metadata's kind)."""
    if format == "imagefolder":
        format = "jsonl" if path.suffix == ".jsonl" else "csv"
    if format == "parquet":
        return _parquet(path)
    text = _text(path)
    if format == "jsonl":
        return _jsonl(path, text)
    return _delimited(path, text, delimiter or ("\t" if format == "tsv" else _sniff(text)), format)


def _text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DataFormatError(path, line, f"the file is not valid UTF-8 ({error.reason} at byte "
                              f"{error.start})", "Save the file as UTF-8 text.") from None


def _sniff(text: str) -> str:
    """The delimiter of a CSV: the one csv.Sniffer finds among , tab ; | (else a comma)."""
    try:
        return csv.Sniffer().sniff(text[:65536], DELIMITERS).delimiter
    except csv.Error:
        return ","


def _delimited(path: Path, text: str, delimiter: str, format: str) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows, lines, start = [], [], 1
    try:
        header = next(reader, None)
        if not header or not any(name.strip() for name in header):
            raise DataFormatError(path, 1, "the file is empty or its first line is blank",
                                  "Put the column names on the first line.")
        header = [name.strip() for name in header]
        _check_header(path, header)
        start = reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):
                if len(row) != len(header):
                    raise DataFormatError(
                        path, start, f"{len(row)} fields where the header has {len(header)}",
                        f"Quote fields that hold the delimiter {delimiter!r} (\"a, b\"), and "
                        "double the quotes inside them; or pass --delimiter.")
                rows.append(dict(zip(header, row)))
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as error:
        raise DataFormatError(path, start, f"not valid CSV ({error})",
                              "Quote fields that hold the delimiter or line breaks, and double "
                              "the quotes inside them (as pandas and Python's csv module "
                              "write them).") from None
    return Table(path, format, header, rows, lines, delimiter)


def _check_header(path: Path, header: list[str]) -> None:
    seen = set()
    for name in header:
        if not name:
            raise DataFormatError(path, 1, "a column has no name", "Name every column.")
        if name in seen:
            raise DataFormatError(path, 1, f"the column {name!r} appears twice",
                                  "Give every column its own name.")
        seen.add(name)


def _jsonl(path: Path, text: str) -> Table:
    rows, lines, columns = [], [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(path, number, f"not valid JSON ({error.msg} at column "
                                  f"{error.colno})", "Write one JSON object per line.") from None
        if not isinstance(row, dict):
            raise DataFormatError(path, number, f"expected a JSON object, got {type(row).__name__}",
                                  'Write one object per line, e.g. {"image": "a.jpg", '
                                  '"text": "...", "labels": ["dog"]}.')
        rows.append(row)
        lines.append(number)
        columns.update(dict.fromkeys(row))
    return Table(path, "jsonl", list(columns), rows, lines)


def _parquet(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataNotFoundError(f"Reading {path} needs pyarrow: pip install 'captag[parquet]'."
                                ) from None
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError... for a bad file
        raise DataFormatError(path, 1, f"not a Parquet file pyarrow can read ({error})",
                              "Write it with pandas' to_parquet or pyarrow.") from None
    rows = table.to_pylist()
    return Table(path, "parquet", table.column_names, rows, list(range(1, len(rows) + 1)))
