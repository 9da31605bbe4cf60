"""What runs a model's ONNX graphs on the CPU, and the choice of the fastest way on this machine.

A graph runs under ONNX Runtime in fp32, or, with the optional extra `captag[openvino]`, under
OpenVINO in fp32 or in bf16 (on a CPU with bf16 instructions: avx512_bf16 or AMX). A model's
`Runtimes` (its graphs by part, e.g. image, text and head) run each graph one such way. When
the runtime or the precision is "auto" and there is more than one way, the model's first batch
chooses: every way of every graph is timed inside the whole model on that batch, and the
fastest mix whose probabilities all stay within `TOLERANCE` of ONNX Runtime fp32 is kept. The
choice is remembered in the cache folder per model, CPU (name and flags), thread count and
library versions, and one log line per graph says what was chosen and why. Torch-free: the
exported runtime uses it.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from captag.config import GRAPH_PRECISIONS, RUNTIMES, cache_root
from captag.errors import ConfigError
from captag.files import write_json

log = logging.getLogger(__name__)

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
TOLERANCE = 0.05  # the largest change of any probability on the first batch a faster way may make
TIMED_RUNS = 3

Runner = Callable[[dict], np.ndarray]  # feeds by input name -> the graph's first output


@dataclass(frozen=True)
class Backend:
    """One way to run a graph: a runtime and a precision."""

    runtime: str
    precision: str

    def __str__(self) -> str:
        return f"{self.runtime} {self.precision}"


FP32 = Backend("onnxruntime", "fp32")


@functools.cache
def cpu() -> dict:
    """This CPU's model name and flags (from /proc/cpuinfo where there is one)."""
    name, flags = platform.processor() or platform.machine(), []
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name":
            name = value
        elif key == "flags":
            flags = value.split()
            break
    return {"name": name, "flags": sorted(flags)}


def has_bf16(info: dict | None = None) -> bool:
    """Whether the CPU has bf16 instructions (avx512_bf16 or AMX)."""
    return any(flag in (info or cpu())["flags"] for flag in BF16_FLAGS)


def openvino_version() -> str | None:
    """OpenVINO's version, or None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.get_version()


def candidates(runtime: str | None = None, precision: str | None = None,
               flag: str = "--") -> list[Backend]:
    """The ways to run a graph on this machine that `runtime` and `precision` allow (None:
    $CAPTAG_RUNTIME and $CAPTAG_PRECISION, else auto), the reference first (ONNX Runtime fp32
    where allowed); a ConfigError says why when a forced one cannot run here, naming the
    options as `flag`runtime and `flag`precision."""
    runtime = runtime or os.environ.get("CAPTAG_RUNTIME") or "auto"
    precision = precision or os.environ.get("CAPTAG_PRECISION") or "auto"
    rt, pr = f"{flag}runtime", f"{flag}precision"
    _check(runtime, RUNTIMES, rt)
    _check(precision, GRAPH_PRECISIONS, pr)
    if runtime == "openvino" and openvino_version() is None:
        raise ConfigError(f"{rt} openvino needs OpenVINO: pip install 'captag[openvino]'.")
    if precision == "bf16" and not has_bf16():
        raise ConfigError(f"{pr} bf16 needs a CPU with {' or '.join(BF16_FLAGS)}; this "
                          f"one ({cpu()['name']}) has neither: use {pr} fp32 or auto.")
    if precision == "bf16" and runtime == "onnxruntime":
        raise ConfigError(f"{pr} bf16 runs under OpenVINO: use {rt} openvino or auto.")
    if precision == "bf16" and openvino_version() is None:
        raise ConfigError(f"{pr} bf16 runs under OpenVINO: pip install 'captag[openvino]'.")
    ways = [FP32]
    if openvino_version() is not None:
        ways += [Backend("openvino", "fp32")] + [Backend("openvino", "bf16")] * has_bf16()
    return [w for w in ways if runtime in ("auto", w.runtime) and precision in ("auto", w.precision)]


def _check(value: str, allowed: tuple, option: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{option} {value!r} is not one of {', '.join(allowed)}.")


def compile_graph(path: Path, way: Backend, threads: int, spin: bool = True) -> Runner:
    """The graph in `path`, run `way` on `threads` threads (`spin`: ONNX Runtime's threads
    spin between calls; off leaves the cores to threads decoding the next batches)."""
    if way.runtime == "onnxruntime":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(None, feeds)[0]
    compiled = _openvino().compile_model(str(path), "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if way.precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run(feeds, compiled=compiled):  # the request must not outlive its compiled model
        return np.array(request.infer(feeds)[compiled.output(0)])
    return run


@functools.cache
def _openvino():
    """One OpenVINO Core for the process: it must outlive every model compiled with it."""
    import openvino as ov
    return ov.Core()


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities from a graph's logits (float32)."""
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float32)))


def largest_change(outputs: np.ndarray, reference: np.ndarray) -> float:
    """The largest absolute difference between two outputs (for probabilities)."""
    return float(np.abs(outputs - reference).max())


def relative_change(outputs: np.ndarray, reference: np.ndarray) -> float:
    """The norm of the difference relative to the reference's (for activations of any scale)."""
    return float(np.linalg.norm(outputs - reference) / max(np.linalg.norm(reference), 1e-12))


class Runtimes:
    """A model's graphs (paths by part), each run one way: `runtimes[part](feeds)`.

    `ready` is False while a choice is pending ("auto" with several ways, not remembered on
    this machine); `choose(probabilities)` then makes it, where `probabilities(runners)` runs
    the whole model on one batch with the given runner for each part."""

    def __init__(self, paths: dict[str, Path], runtime: str | None = None,
                 precision: str | None = None,
                 threads: int = 1, spin: bool = True, store: Path | None = None):
        self.paths, self.threads, self.spin = paths, threads, spin
        self.options = candidates(runtime, precision)
        self.store = store or cache_root() / "runtimes.json"
        self.chosen = ({part: self.options[0] for part in paths} if len(self.options) == 1
                       else self._remembered())
        self.runners = None if self.chosen is None else self._compile(self.chosen)

    @property
    def ready(self) -> bool:
        return self.runners is not None

    def __getitem__(self, part: str) -> Runner:
        return self.runners[part]

    @property
    def runtime(self) -> str:
        """The first graph's runtime: onnxruntime or openvino ("auto" until chosen)."""
        return next(iter(self.chosen.values())).runtime if self.chosen else "auto"

    def describe(self) -> dict[str, str]:
        """How each graph runs ("auto" until the first batch has chosen)."""
        return {part: str(self.chosen[part]) if self.chosen else "auto" for part in self.paths}

    def _compile(self, ways: dict[str, Backend]) -> dict[str, Runner]:
        return {part: compile_graph(path, ways[part], self.threads, self.spin)
                for part, path in self.paths.items()}

    def choose(self, probabilities: Callable[[dict[str, Runner]], np.ndarray],
               measure: Callable[[np.ndarray, np.ndarray], float] = largest_change,
               tolerance: float = TOLERANCE) -> None:
        """Time every way of every graph inside the model on one batch; keep the fastest mix
        whose outputs stay within `tolerance` of the reference way's by `measure(outputs,
        reference)` (default: the largest absolute change, for probabilities)."""
        runners = {part: {way: compile_graph(path, way, self.threads, self.spin)
                          for way in self.options} for part, path in self.paths.items()}
        first = {part: ways[self.options[0]] for part, ways in runners.items()}
        reference = probabilities(first)
        seconds = {(part, way): _timed(probabilities, first, part, run)
                   for part, ways in runners.items() for way, run in ways.items()}
        mixes = sorted(itertools.product(self.options, repeat=len(self.paths)),
                       key=lambda mix: sum(seconds[p, w] for p, w in zip(self.paths, mix)))
        for mix in mixes:
            ways = dict(zip(self.paths, mix))
            change = measure(probabilities({p: runners[p][w] for p, w in ways.items()}),
                               reference)
            if change <= tolerance:
                break
        self.chosen, self.runners = ways, {p: runners[p][w] for p, w in ways.items()}
        for part, way in ways.items():
            log.info("runtime: %s for the %s graph (%.1f ms against %.1f under %s; outputs "
                     "within %.3f of it)", way, part, seconds[part, way] * 1e3,
                     seconds[part, self.options[0]] * 1e3, self.options[0], change)
        self._remember({part: {str(w): round(seconds[part, w] * 1e3, 2) for w in self.options}
                        for part in self.paths}, change)

    @functools.cached_property
    def _key(self) -> str:
        import onnxruntime
        info = cpu()
        parts = [hashlib.sha256(path.read_bytes()).hexdigest() for path in self.paths.values()]
        parts += [info["name"], " ".join(f for f in info["flags"] if "avx" in f or "amx" in f),
                  onnxruntime.__version__, str(openvino_version()), str(self.threads),
                  ",".join(map(str, self.options))]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

    def _known(self) -> dict:
        try:
            return json.loads(self.store.read_text())
        except (OSError, ValueError):
            return {}

    def _remembered(self) -> dict[str, Backend] | None:
        entry = self._known().get(self._key)
        if not entry:
            return None
        return {part: Backend(*entry["ways"][part]) for part in self.paths}

    def _remember(self, ms: dict, change: float) -> None:
        known = self._known()
        known[self._key] = {
            "ways": {part: [way.runtime, way.precision] for part, way in self.chosen.items()},
            "ms_per_batch": ms, "change": round(change, 4), "cpu": cpu()["name"],
            "graphs": {part: str(path) for part, path in self.paths.items()}}
        self.store.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.store, known)


def _timed(probabilities, runners: dict, part: str, run: Runner) -> float:
    """The fastest of TIMED_RUNS calls of `run` as `part` inside the model (after a warm-up)."""
    spent = []

    def timed(feeds):
        start = time.perf_counter()
        output = run(feeds)
        spent.append(time.perf_counter() - start)
        return output
    for _ in range(TIMED_RUNS + 1):
        probabilities({**runners, part: timed})
    return min(spent[1:])
