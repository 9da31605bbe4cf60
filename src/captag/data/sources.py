"""One reader for every dataset: a file (or an imagefolder) to records, image path, text and
label set per row, with the columns and the label form it chose.

COMP5329 files go through `records.read_records`, with all its checks. Other tables
(`tables.read_table`) have their columns chosen by name (or by `DataOptions`), their labels
parsed from a delimited string, a JSON list or one 0/1 column per label, and every row checked:
a missing text or image path, or a label set that cannot be parsed, is an error that names the
file, the line and the column, unless `skip_bad`, which leaves the row out and lists it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

from captag.errors import DataFormatError, DataNotFoundError

from .images import resolve_image_dir
from .labels import LabelMap
from .records import Record, read_records
from .tables import Table, data_file, read_table

log = logging.getLogger(__name__)

CANDIDATES = {
    "image": ("file_name", "image", "image_path", "path", "filepath"),
    "text": ("text", "caption", "title", "description"),
    "labels": ("labels", "tags", "label"),
}
# the settings that a run remembers, to read another file of the same shape the same way
REMEMBERED = ("image_column", "text_column", "label_column", "label_sep", "label_columns",
              "label_columns_prefix")
OPTION = {"image": "--image-column", "text": "--text-column", "labels": "--label-column"}
SEPARATORS = ("|", ";", ",")  # sniffed in this order; else whitespace
TRUE, FALSE = ("1", "1.0", "true", "yes"), ("0", "0.0", "false", "no", "")


@dataclass(frozen=True)
class DataOptions:
    """How to read a dataset; every field None means: found from the data."""

    format: str | None = None
    images: str | None = None
    delimiter: str | None = None
    image_column: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    label_sep: str | None = None
    label_columns: str | None = None
    label_columns_prefix: str | None = None
    labels: str | None = None  # a file with one label per line, in order
    skip_bad: bool = False
    labels_if_present: bool = False  # a named label column that is not there: no labels

    @classmethod
    def of(cls, settings) -> "DataOptions":
        """The options among the attributes of `settings` (a RunConfig, argparse's Namespace)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)
                      if getattr(settings, f.name, None) is not None})

    def over(self, settings: dict) -> "DataOptions":
        """These options over a run's remembered `settings` (the options that are set win),
        reading labels only where the data has the columns they name."""
        given = {k: v for k, v in vars(self).items() if v}
        return DataOptions(**{**settings, **given, "labels_if_present": True})

    def label_form(self) -> LabelForm | None:
        """The label form these options name (None when they name no label column)."""
        if self.label_columns:
            columns = tuple(c.strip() for c in self.label_columns.split(",") if c.strip())
            return LabelForm("columns", columns=columns, prefix=self.label_columns_prefix or "")
        if self.label_column:
            if self.label_sep:
                return LabelForm("delimited", self.label_column, self.label_sep)
            return LabelForm("list", self.label_column)
        return None


@dataclass(frozen=True)
class LabelForm:
    """How a dataset writes its labels, so that predictions are written the same way."""

    kind: str  # "comp5329", "delimited", "list" or "columns"
    column: str | None = None
    sep: str | None = None  # for "delimited": " " means any whitespace
    columns: tuple[str, ...] = ()  # for "columns"
    prefix: str = ""


@dataclass
class Data:
    """What `read_data` found: records, image folder, columns, label form, skipped rows."""

    path: Path
    format: str
    records: list[Record]
    images: str | None  # the --images folder, if given
    image_column: str | None
    text_column: str | None
    labels: LabelForm | None
    skipped: list[dict] = field(default_factory=list)
    delimiter: str | None = None

    @property
    def is_comp5329(self) -> bool:
        return self.format == "comp5329"

    def image_dir(self) -> Path:
        """The folder that image paths are relative to: --images, else data/ beside a COMP5329
        file, else the data file's folder; DataNotFoundError when there is no image column."""
        if self.image_column is None:
            raise DataNotFoundError(f"{self.path} has no image column (looked for "
                                    f"{_looked('image')}): pass --image-column, or train a "
                                    "text-only model (--model text-only).")
        if self.is_comp5329:
            return resolve_image_dir(self.path, self.images)
        return _image_dir(self.path, self.images)

    def chosen(self) -> str:
        """One line: the format and the columns read, e.g. for `captag data` and `train`."""
        form = self.labels
        if form is None:
            labels = "no labels"
        elif form.kind == "columns":
            labels = f"labels: {len(form.columns)} 0/1 columns ({form.columns[0]}, ...)"
        elif form.kind == "delimited":
            labels = f"labels: {form.column!r} split on {'spaces' if form.sep == ' ' else repr(form.sep)}"
        else:
            labels = f"labels: {form.column!r} ({'JSON lists' if form.kind == 'list' else 'COMP5329'})"
        return (f"{self.path}: {self.format}, image: {self.image_column!r}, text: "
                f"{self.text_column!r}, {labels}; {len(self.records)} rows read"
                + (f", {len(self.skipped)} left out" if self.skipped else ""))

    def settings(self) -> dict:
        """The options that read the data this way again (for the run's config.yaml; a
        COMP5329 file needs none)."""
        if self.is_comp5329:
            return {}
        form = self.labels or LabelForm("none")
        return {"image_column": self.image_column, "text_column": self.text_column,
                "label_column": form.column if form.kind in ("delimited", "list") else None,
                "label_sep": form.sep,
                "label_columns": ",".join(form.columns) if form.kind == "columns" else None}


def read_data(path: str | Path, options: DataOptions = DataOptions(),
              known: LabelMap | None = None) -> Data:
    """Read a dataset. `known` (a run's labels) checks its labels against the run's."""
    path, format = data_file(path, options.format)
    if format == "comp5329":
        ids = known.ids if known is not None and _all_int(known.ids) else LabelMap.default().ids
        records = read_records(path, ids)
        labelled = records[0].labels is not None
        return Data(path, format, records, options.images, "ImageID", "Caption",
                    LabelForm("comp5329", "Labels", " ") if labelled else None)
    table = read_table(path, format, options.delimiter)
    table.format = format  # an imagefolder's metadata is read as JSON Lines or CSV
    return _read_table(table, options, known, path)


def _read_table(table: Table, options: DataOptions, known: LabelMap | None, path: Path) -> Data:
    if not table.rows:
        raise DataFormatError(path, 1, "the file has no rows", "Add rows below the header.")
    image, text = (_column(table, options, kind) for kind in ("image", "text"))
    if image is None and text is None:
        raise DataFormatError(path, 1, f"no image or text column among {table.columns}",
                              f"Name them (looked for {_looked('image')} and {_looked('text')}) "
                              "or pass --image-column / --text-column.")
    form = _label_form(table, options)
    reader = _RowReader(table, image, text, form, known)
    records, skipped = reader.read(options.skip_bad)
    if not records:
        raise DataFormatError(path, 1, "every row was left out as bad", "Fix the rows listed above.")
    return Data(path, table.format, records, options.images, image, text, form, skipped,
                table.delimiter)


def remembered(settings) -> dict:
    """The REMEMBERED settings that `settings` (a RunConfig) sets."""
    return {name: getattr(settings, name) for name in REMEMBERED
            if getattr(settings, name, None) is not None}


def require_labelled(data: Data, purpose: str) -> None:
    """A DataFormatError (at line 1) unless the data has labels; `purpose` says what needs
    them, e.g. "training"."""
    if data.labels is None:
        looked = "a Labels column" if data.is_comp5329 else f"a label column ({_looked('labels')})"
        raise DataFormatError(data.path, 1, f"the data has no labels, and {purpose} needs "
                              f"labelled rows (looked for {looked})",
                              "Pass --label-column, --label-columns or --label-columns-prefix; "
                              "`captag predict` is the command for unlabelled rows.")


def read_rows(rows: Sequence[dict], options: DataOptions = DataOptions(),
              name: str = "rows") -> Data:
    """Rows given as dicts (a list of them, or a DataFrame's records), read as `read_data`
    reads a file's rows; errors name the row by its 1-based number. Image paths are relative to
    `options.images`, else to the current folder."""
    rows = list(rows)
    if not rows or not all(isinstance(row, dict) for row in rows):
        raise DataFormatError(name, 1, "expected a non-empty list of dicts (one per row)",
                              "Pass a DataFrame, a list of dicts or a data file.")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return _read_table(Table(Path(name), "rows", columns, rows, list(range(1, len(rows) + 1))),
                       options, None, Path.cwd() / name)


def _all_int(ids) -> bool:
    return all(isinstance(i, int) for i in ids)


def _image_dir(path: Path, images: str | None) -> Path:
    if not images:
        return path.absolute().parent
    folder = Path(images)
    if not folder.is_dir():
        raise DataNotFoundError(f"Image folder {folder} (given with --images) does not exist. "
                                "Pass the folder that image paths are relative to.")
    return folder


def _looked(kind: str) -> str:
    return "/".join(CANDIDATES[kind])


def _column(table: Table, options: DataOptions, kind: str) -> str | None:
    """The column of `kind` ("image", "text", "labels"): the one given, else the one whose
    name is a usual one (any case); None when there is none; an error when two fit."""
    given = getattr(options, {"labels": "label_column"}.get(kind, f"{kind}_column"))
    if given:
        if given not in table.columns:
            raise DataFormatError(table.path, 1, f"{OPTION[kind]} {given!r} is not a column "
                                  f"(columns: {', '.join(table.columns)})",
                                  "Pass one of the file's column names.")
        return given
    fits = [c for c in table.columns if c.strip().lower() in CANDIDATES[kind]]
    if len(fits) > 1:
        raise DataFormatError(table.path, 1, f"both columns {fits[0]!r} and {fits[1]!r} could "
                              f"be the {kind} column", f"Choose one with {OPTION[kind]}.")
    return fits[0] if fits else None


def _label_form(table: Table, options: DataOptions) -> LabelForm | None:
    named = options.label_form()
    if options.labels_if_present and named is not None:
        wanted = named.columns or (named.column,)
        if not set(wanted) <= set(table.columns):
            return None
    if options.label_columns or options.label_columns_prefix:
        return _one_hot(table, options)
    column = _column(table, options, "labels")
    if column is None:
        return None
    values = [row.get(column) for row in table.rows]
    if any(isinstance(v, list) for v in values):
        return LabelForm("list", column)
    return LabelForm("delimited", column, options.label_sep or sniff_separator(values))


def _one_hot(table: Table, options: DataOptions) -> LabelForm:
    prefix = options.label_columns_prefix or ""
    if options.label_columns:
        columns = tuple(c.strip() for c in options.label_columns.split(",") if c.strip())
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise DataFormatError(table.path, 1, f"--label-columns names {missing[0]!r}, which "
                                  f"is not a column (columns: {', '.join(table.columns)})",
                                  "Pass the file's 0/1 label columns.")
    else:
        columns = tuple(c for c in table.columns if c.startswith(prefix) and c != prefix)
        if not columns:
            raise DataFormatError(table.path, 1, f"no column starts with {prefix!r} "
                                  f"(columns: {', '.join(table.columns)})",
                                  "Pass the prefix of the 0/1 label columns.")
    return LabelForm("columns", columns=columns, prefix=prefix)


def sniff_separator(values: Sequence) -> str:
    """The separator of delimited label strings: | ; or , when a value holds one, else
    whitespace (" ")."""
    strings = [v for v in values if isinstance(v, str)]
    for sep in SEPARATORS:
        if any(sep in v for v in strings):
            return sep
    return " "


class _RowReader:
    """Turns a table's rows into records, checking each value."""

    def __init__(self, table: Table, image: str | None, text: str | None,
                 form: LabelForm | None, known: LabelMap | None):
        self.table, self.image, self.text, self.form = table, image, text, form
        self.known = set(map(str, known.ids)) if known is not None else None

    def read(self, skip_bad: bool) -> tuple[list[Record], list[dict]]:
        records, skipped = [], []
        for row, line in zip(self.table.rows, self.table.lines):
            try:
                records.append(self.record(row, line))
            except _BadValue as bad:
                error = DataFormatError(self.table.path, line, f"column {bad.column!r}: {bad.problem}",
                                        bad.fix + ("" if skip_bad else
                                                   " Or pass --skip-bad to leave such rows out."))
                if not skip_bad:
                    raise error from None
                skipped.append({"line": line, "column": bad.column, "problem": bad.problem})
        if skipped:
            log.warning("Left out %d bad rows of %s (--skip-bad):\n%s", len(skipped),
                        self.table.path, "\n".join(f"  line {s['line']}: column {s['column']!r}: "
                                                   f"{s['problem']}" for s in skipped[:50]))
        return records, skipped

    def record(self, row: dict, line: int) -> Record:
        image = self._string(row, self.image, "an image path") if self.image else ""
        text = self._string(row, self.text, "a text") if self.text else ""
        labels = self._labels(row) if self.form is not None else None
        return Record(image, text, labels, line, key=image or f"line {line}")

    @staticmethod
    def _string(row: dict, column: str, what: str) -> str:
        value = row.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _BadValue(column, f"{what} is missing", f"Give every row {what}.")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise _BadValue(column, f"{what} must be a string, got {_short(value)}",
                            f"Write {what} as a string.")
        return str(value)

    def _labels(self, row: dict) -> tuple[str, ...]:
        form = self.form
        if form.kind == "columns":
            labels = tuple(label_name(c, form.prefix) for c in form.columns if self._on(row, c))
        else:
            labels = self._listed(row.get(form.column), form)
        if len(set(labels)) != len(labels):
            twice = next(label for label in labels if labels.count(label) > 1)
            raise _BadValue(form.column or form.columns[0], f"the label {twice!r} is listed twice",
                            "List each label of a row once.")
        unknown = [label for label in labels if self.known is not None and label not in self.known]
        if unknown:
            raise _BadValue(form.column or "labels", f"the label {unknown[0]!r} is not one the "
                            "run learned", f"The run knows: {_names(self.known)}.")
        return labels

    @staticmethod
    def _on(row: dict, column: str) -> bool:
        value = row.get(column)
        text = str(value).strip().lower() if value is not None else ""
        if isinstance(value, bool) or text in TRUE or text in FALSE:
            return bool(value) if isinstance(value, bool) else text in TRUE
        raise _BadValue(column, f"{_short(value)} is not 0 or 1",
                        "Write 1 where the row has the label and 0 where it has not.")

    @staticmethod
    def _listed(value, form: LabelForm) -> tuple[str, ...]:
        column = form.column
        if isinstance(value, list):
            if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
                raise _BadValue(column, f"the label list {_short(value)} holds something other "
                                "than strings or numbers", 'Write labels as ["dog", "cat"].')
            labels = [str(v).strip() for v in value]
        elif isinstance(value, (int, str)) and not isinstance(value, bool):
            text = str(value)
            if not text.strip():
                raise _BadValue(column, "the labels are missing", "Give every row its labels "
                                "(use --skip-bad to leave rows without them out).")
            labels = text.split() if form.sep == " " else [p.strip() for p in text.split(form.sep)]
        elif value is None:
            raise _BadValue(column, "the labels are missing", "Give every row its labels.")
        else:
            raise _BadValue(column, f"cannot read labels from {_short(value)}",
                            "Write labels as a delimited string or a JSON list.")
        if any(not label for label in labels):
            raise _BadValue(column, f"an empty label in {_short(value)}",
                            "Remove the doubled or trailing separator, or set --label-sep.")
        return tuple(labels)


def label_name(column: str, prefix: str) -> str:
    """The label of a 0/1 column: its name without the prefix."""
    return column[len(prefix):] if prefix and column.startswith(prefix) else column


class _BadValue(Exception):
    def __init__(self, column: str, problem: str, fix: str):
        super().__init__(problem)
        self.column, self.problem, self.fix = column, problem, fix


def _short(value, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."


def _names(labels, most: int = 20) -> str:
    ordered = sorted(labels, key=label_key)
    return ", ".join(ordered[:most]) + (f" and {len(ordered) - most} more" if len(ordered) > most else "")


def label_key(label) -> tuple:
    """Sort key: numbers in numeric order first, then words in alphabetical order."""
    text = str(label)
    return (0, int(text), "") if re.fullmatch(r"\d+", text) else (1, 0, text)


def label_map(data: Data, labels_file: str | None = None) -> LabelMap:
    """The label map of a training set: COMP5329's 18 labels, the labels of `labels_file` (one
    per line, in order), or the labels of the rows, sorted; a DataFormatError names a row's
    label that the file does not list."""
    if data.is_comp5329:
        return LabelMap.default()
    if labels_file:
        names = _read_label_file(Path(labels_file))
        listed = set(names)
        for record in data.records:
            unknown = [label for label in record.labels if label not in listed]
            if unknown:
                raise DataFormatError(data.path, record.line, f"the label {unknown[0]!r} is not "
                                      f"in {labels_file}", "Add it to that file, or fix the row.")
    else:
        names = sorted({label for r in data.records for label in r.labels}, key=label_key)
    if len(names) < 2:
        raise DataFormatError(data.path, 1, f"only {len(names)} distinct label ({names})",
                              "A multi-label dataset needs at least 2 labels.")
    return LabelMap(tuple(names), tuple(names))


def _read_label_file(path: Path) -> list[str]:
    if not path.is_file():
        raise DataNotFoundError(f"Label file {path} (given with --labels) does not exist.")
    names = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in names:
            raise DataFormatError(path, number, f"the label {name!r} is listed twice",
                                  "List each label once.")
        names.append(name)
    return names
