"""Speed: a wall-clock timer and throughput in samples per second."""

from __future__ import annotations

import time


class Timer:
    """Context manager that measures wall-clock time; ``.seconds`` is set on exit."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> "Timer":
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start


def throughput(n_samples: int, seconds: float) -> float:
    """Samples per second; 0.0 when ``seconds`` is not positive."""
    return n_samples / seconds if seconds > 0 else 0.0
