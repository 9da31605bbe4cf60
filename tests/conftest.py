"""Shared pytest fixtures."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "comp5329"


@pytest.fixture
def data_dir() -> Path:
    """The real COMP5329 data folder (read-only)."""
    if not DATA.is_dir():
        pytest.skip(f"dataset not found at {DATA}")
    return DATA
