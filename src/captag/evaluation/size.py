"""Model size: parameter counts, in-memory and on-disk megabytes, and the 100 MB budget.

Torch-free: a model is anything with `parameters()` and `buffers()`.

Here 1 MB = 2**20 bytes (a mebibyte).
"""

from __future__ import annotations

import os
import warnings

BUDGET_MB = 100.0
BYTES_PER_MB = 2**20


def parameter_count(model) -> int:
    """Number of parameters (each shared tensor counted once; buffers not counted)."""
    return sum(p.numel() for p in model.parameters())


def parameter_mb(model) -> float:
    """Size of parameters and buffers, sum of numel * element_size, in MB (2**20 bytes)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / BYTES_PER_MB


def file_mb(path: str | os.PathLike) -> float:
    """Size of a file in MB (2**20 bytes)."""
    return os.path.getsize(path) / BYTES_PER_MB


def check_budget(mb: float, budget: float = BUDGET_MB) -> bool:
    """True if ``mb`` is within ``budget``; otherwise warn (UserWarning) and return False."""
    if mb <= budget:
        return True
    warnings.warn(
        f"model size {mb:.1f} MB exceeds the seed's {budget:.0f} MB budget",
        UserWarning, stacklevel=2,
    )
    return False
