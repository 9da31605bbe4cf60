"""Load test of `captag serve`: N /predict requests at concurrency C, real photos and captions.

    python benchmarks/load_test.py RUN_OR_EXPORT_DIR [--requests 1000] [--concurrency 32]
        [--csv ../shared/datasets/comp5329/train.csv] [--max-batch-wait-ms 5] [--max-batch-size 16]

Starts `captag serve` on a free loopback port (a subprocess), waits until it answers, sends the
requests with httpx.AsyncClient (photos and captions of the CSV's first rows, read into memory
first), and samples the server's resident memory (psutil) throughout. Prints a markdown table
and writes benchmarks/results/load_test.json (or --out). The client runs on the same machine and
takes some of its CPU. Targets on 2 quiet cores: 0 errors, >= 100 requests/s, p95 <= 500 ms,
server peak RSS <= 1 GB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
DEFAULT_CSV = HERE.parent.parent / "shared" / "datasets" / "comp5329" / "train.csv"


def load_items(csv: Path, n: int) -> list[tuple[str, bytes, str]]:
    """(name, photo bytes, caption) of the CSV's first n rows (fewer rows are reused)."""
    from captag.data import read_records
    records = read_records(csv)[:n]
    images = csv.parent / "data"
    return [(r.image_id, (images / r.image_id).read_bytes(), r.caption) for r in records]


def start_server(folder: str, args) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "captag.cli", "serve", folder, "--port", "0",
               "--max-batch-wait-ms", str(args.max_batch_wait_ms),
               "--max-batch-size", str(args.max_batch_size)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    line = server.stderr.readline()
    if "serving" not in line:
        server.kill()
        raise SystemExit(f"captag serve did not start:\n{line}{server.stderr.read()[-3000:]}")
    threading.Thread(target=server.stderr.read, daemon=True).start()  # keep the pipe drained
    return server, line.split(" at ")[1].split()[0]


class PeakMemory(threading.Thread):
    """Samples the resident memory of a process and its children until stopped."""

    def __init__(self, pid: int, every_s: float = 0.05):
        super().__init__(daemon=True)
        self.process, self.every_s = psutil.Process(pid), every_s
        self.peak = self.first = 0
        self.stop = threading.Event()

    def rss(self) -> int:
        processes = [self.process] + self.process.children(recursive=True)
        return sum(p.memory_info().rss for p in processes)

    def run(self) -> None:
        self.first = self.rss()
        while not self.stop.wait(self.every_s):
            self.peak = max(self.peak, self.rss())


async def send_all(url: str, items: list, n: int, concurrency: int) -> tuple[list, list, float]:
    """(latencies in s, errors, wall seconds) of n requests, at most `concurrency` at once."""
    latencies, errors, gate = [], [], asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def one(i: int) -> None:
            name, photo, caption = items[i % len(items)]
            async with gate:
                start = time.perf_counter()
                try:
                    answer = await client.post("predict", files={"image": (name, photo)},
                                               data={"caption": caption})
                    if answer.status_code != 200:
                        errors.append(f"{answer.status_code}: {answer.text[:200]}")
                except httpx.HTTPError as error:
                    errors.append(f"{type(error).__name__}: {error}")
                latencies.append(time.perf_counter() - start)
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return latencies, errors, time.perf_counter() - start


def wait_healthy(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer /health within {timeout_s:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(args) -> dict:
    items = load_items(Path(args.csv), min(args.requests, 2000))
    server, url = start_server(args.folder, args)
    try:
        wait_healthy(url)
        memory = PeakMemory(server.pid)
        memory.start()
        asyncio.run(send_all(url, items, args.warmup, args.concurrency))
        before, cpu = httpx.get(url + "health").json(), cpu_seconds(server.pid)
        latencies, errors, wall = asyncio.run(send_all(url, items, args.requests, args.concurrency))
        after, cpu = httpx.get(url + "health").json(), cpu_seconds(server.pid) - cpu
        memory.stop.set()
        memory.join()
    finally:
        server.terminate()
        server.wait(30)
    return {
        "folder": args.folder, "requests": args.requests, "concurrency": args.concurrency,
        "max_batch_wait_ms": args.max_batch_wait_ms, "max_batch_size": args.max_batch_size,
        "errors": len(errors), "error_examples": errors[:5],
        "mean_batch": round((after["items"] - before["items"]) / max(1, after["batches"] - before["batches"]), 1),
        "requests_per_second": round(args.requests / wall, 1), "seconds": round(wall, 2),
        "server_cpu_ms_per_request": round(1000 * cpu / args.requests, 1),
        "p50_ms": round(1000 * percentile(latencies, 0.50), 1),
        "p95_ms": round(1000 * percentile(latencies, 0.95), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "server_rss_start_mb": round(memory.first / 2**20), "server_peak_rss_mb": round(memory.peak / 2**20),
        "cpus": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def table(result: dict) -> str:
    rows = [("errors", result["errors"], "0"),
            ("requests/s", result["requests_per_second"], ">= 100"),
            ("p50 latency (ms)", result["p50_ms"], ""),
            ("p95 latency (ms)", result["p95_ms"], "<= 500"),
            ("p99 latency (ms)", result["p99_ms"], ""),
            ("server peak RSS (MB)", result["server_peak_rss_mb"], "<= 1024"),
            ("mean items per model call", result["mean_batch"], ""),
            ("server CPU time per request (ms)", result["server_cpu_ms_per_request"], "")]
    lines = [f"{result['requests']} requests at concurrency {result['concurrency']} "
             f"({result['cpus']} CPUs, batch wait {result['max_batch_wait_ms']} ms, "
             f"batch size {result['max_batch_size']})", "",
             "| measure | value | target |", "|---|---|---|"]
    return "\n".join(lines + [f"| {name} | {value} | {target} |" for name, value, target in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a run folder or an exported one")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=32, help="requests sent first, not counted")
    parser.add_argument("--csv", default=str(DEFAULT_CSV), help="rows whose photos and captions are sent")
    parser.add_argument("--max-batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--out", default=str(HERE / "results" / "load_test.json"))
    args = parser.parse_args()
    result = measure(args)
    print(table(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
