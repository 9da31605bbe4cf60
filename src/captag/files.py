"""Strict JSON in and out: no bare NaN (it is written as null), atomic writes, and read errors
that name the file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from captag.errors import CaptagError, OutputError


def jsonable(value):
    """The value with every non-finite float (NaN, inf) replaced by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return jsonable(value.item())
    return value


def dumps(data, indent: int | None = None) -> str:
    """Strict JSON text (what JavaScript's JSON.parse accepts)."""
    return json.dumps(jsonable(data), indent=indent, allow_nan=False)


def write_json(path: str | Path, data) -> None:
    """Write strict JSON atomically: readers see the old file or the new one, never a part."""
    write_text(path, dumps(data, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with replaced(Path(path)) as tmp:
        Path(tmp).write_text(text)


@contextmanager
def replaced(path: Path):
    """A unique temporary name beside `path`, moved onto `path` if the block succeeds and
    removed if it fails: readers and concurrent writers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json(path: str | Path, error: type[CaptagError], expected: str = "a JSON object"):
    """The JSON in `path`; `error` (naming the file and what was expected) if it is missing or
    not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path} is missing.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{path}: not valid JSON ({problem}); expected {expected}.") from None


def ensure_parent(path: Path, option: str) -> None:
    """Create the folder that will hold `path`; an OutputError naming `option` (e.g. --out)
    if it cannot be created or written to."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{option} {path}: its folder {path.parent} cannot be created "
                          f"({error.strerror or error}).") from None
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"{option} {path}: the folder {path.parent} is not writable.")
