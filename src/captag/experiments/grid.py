"""Grids of settings: parse "batch_size=16,32 lr=1e-4,1e-3", list their points, or vary one at a time.

Values are typed from the RunConfig field they set (int, float, str or bool).
"""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing

from captag.config import RunConfig

FORM = "OPTION=VALUE,VALUE,... separated by spaces, e.g. \"batch_size=16,32,64 lr=1e-5,1e-4\""
TRUE, FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def field_types() -> dict[str, type]:
    """The plain type (int, float, str, bool) of each RunConfig field that a grid can set."""
    hints = typing.get_type_hints(RunConfig)
    found = {}
    for field in dataclasses.fields(RunConfig):
        kind = hints[field.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if kind in (int, float, str, bool):
            found[field.name] = kind
    return found


def parse_value(text: str, kind: type, token: str):
    try:
        if kind is bool:
            if text.lower() not in TRUE + FALSE:
                raise ValueError(text)
            return text.lower() in TRUE
        return kind(text)
    except ValueError:
        raise ValueError(f"Bad grid token {token!r}: {text!r} is not a valid {kind.__name__}. "
                         f"Expected {FORM}.") from None


def parse_grid(text: str) -> dict[str, list]:
    """{option: [values]} from "option=v1,v2 option=v1,..."; errors name the bad token."""
    known = field_types()
    grid: dict[str, list] = {}
    for token in text.split():
        name, sep, values = token.partition("=")
        name = name.replace("-", "_")
        if not sep:
            raise ValueError(f"Bad grid token {token!r}: missing '='. Expected {FORM}.")
        if name not in known:
            raise ValueError(f"Bad grid token {token!r}: unknown option {name!r}. "
                             f"Known options: {', '.join(sorted(known))}. Expected {FORM}.")
        if name in grid:
            raise ValueError(f"Bad grid token {token!r}: option {name!r} is given twice. "
                             f"Expected {FORM}.")
        parts = values.split(",")
        if not values or any(not p.strip() for p in parts):
            raise ValueError(f"Bad grid token {token!r}: empty value. Expected {FORM}.")
        grid[name] = [parse_value(p.strip(), known[name], token) for p in parts]
    if not grid:
        raise ValueError(f"Empty grid {text!r}. Expected {FORM}.")
    return grid


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values (the full cartesian product)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*grid.values())]


def one_at_a_time(grid: dict[str, list], base: dict) -> list[dict]:
    """The base point, then each option's other values with the rest kept at the base.

    An option missing from `base` starts at its first grid value.
    """
    center = {**{name: values[0] for name, values in grid.items()}, **base}
    points = [dict(center)]
    for name, values in grid.items():
        points += [{**center, name: value} for value in values if value != center[name]]
    return points
