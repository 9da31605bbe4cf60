"""ONNX export of modules, for the feature cache and for inference (`captag.models.engines`
runs the graphs).

An export goes to a unique temporary file beside its target and is renamed into place, so
processes exporting the same graph at once never read, or rename, each other's half-written
file. Tracer and exporter warnings are silenced: they concern the graph, not the user.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from captag.files import replaced


def available() -> bool:
    """Whether ONNX Runtime is installed."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export(module: nn.Module, example: Sequence[torch.Tensor], path: Path,
           input_names: Sequence[str], output_name: str = "y",
           dynamic_axes: dict | None = None) -> None:
    """Write `module` (in eval mode) as ONNX to `path`, atomically. Every input and the output
    have a dynamic first axis (batch); `dynamic_axes` adds others, e.g. {"ids": {1: "tokens"}}."""
    axes = {name: {0: "batch"} for name in [*input_names, output_name]}
    for name, more in (dynamic_axes or {}).items():
        axes[name] = {**axes.get(name, {}), **more}
    with replaced(Path(path)) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(example), tmp, input_names=list(input_names),
                          output_names=[output_name], dynamic_axes=axes, dynamo=False)


def exported(module: nn.Module, example: Sequence[torch.Tensor], path: Path,
             input_names: Sequence[str], output_name: str = "y",
             dynamic_axes: dict | None = None, fresh: bool | None = None) -> Path | None:
    """`path`, where `module` is exported first unless it is there and `fresh` (default: it
    exists); None without ONNX Runtime. `captag.models.engines` runs it."""
    if not available():
        return None
    if not (path.exists() if fresh is None else fresh):
        export(module, example, path, input_names, output_name, dynamic_axes)
    return path
