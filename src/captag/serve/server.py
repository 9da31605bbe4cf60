"""`captag serve`: load and check the model once, bind the socket, then run uvicorn on it.

A bad folder or setting, or a port in use, stops before anything listens (a CaptagError: one
line, exit 2). The model's first prediction runs before binding, so the first request is not slow.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from captag.errors import ConfigError
from captag.serve.app import MAX_ITEMS, Settings, create_app
from captag.serve.model import ServedModel


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 8000,
          settings: Settings = Settings(), verbose: bool = False, runtime: str | None = None,
          precision: str | None = None) -> int:
    """Serve the run (or exported) folder at http://host:port/ until interrupted (with
    `verbose`, uvicorn logs each request; `runtime` and `precision`: how its ONNX graphs run)."""
    import uvicorn
    check_settings(port, settings)
    model = ServedModel.load(path, runtime=runtime, precision=precision)
    _one_torch_thread()
    sock = bind(host, port)
    name = f"[{host}]" if ":" in host else host
    print(f"captag: serving {path} at http://{name}:{sock.getsockname()[1]}/ (API docs at /docs; "
          "Ctrl+C stops)", file=sys.stderr, flush=True)
    config = uvicorn.Config(create_app(model, settings), log_level="info" if verbose else "warning",
                            access_log=verbose)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def check_settings(port: int, settings: Settings) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a port: pass 0 to 65535 (0: any free port).")
    if not settings.max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb {settings.max_upload_mb:g} must be above 0.")
    if not settings.max_batch_wait_ms >= 0:
        raise ConfigError(f"--max-batch-wait-ms {settings.max_batch_wait_ms:g} must be 0 or more.")
    if not 1 <= settings.max_batch_size <= MAX_ITEMS:
        raise ConfigError(f"--max-batch-size {settings.max_batch_size} must be 1 to {MAX_ITEMS}.")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; ConfigError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise ConfigError(f"Cannot listen on {host}:{port} ({error.strerror or error}): pass "
                          "another --port or --host.") from None


def _one_torch_thread() -> None:
    """The per-image tensor ops of a run folder's Predictor (to float, normalise) on one thread:
    on two busy cores, OpenMP's synchronisation made them about 30 times slower than the ops
    themselves. ONNX Runtime keeps the threads its session was built with."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
