"""Runs: the run-folder contract, what a run writes and how a later command loads it back."""

from .folder import RunFolder

__all__ = ["RunFolder"]
