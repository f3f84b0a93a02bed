"""Latency and throughput of ``POST /api/search`` against the production server (gunicorn via
``simsearch serve``) started on loopback as a subprocess; the client runs in this separate process.

    python -m bench.api_latency --index DIR --image FILE [--name fmnist] [--workers 2] [--threads 4]

Measures: one client's p50/p95/p99 over ``--requests`` requests after ``--warmup``; throughput with
``--concurrency`` client threads (each with its own connection) for at most ``--duration`` seconds or
``--throughput-requests`` requests; the server-reported split (decode/embed/search/vote/total and JSON
encode, from the ``Server-Timing`` header) averaged.  Writes bench/results/api_latency_<name>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

import requests

from bench import REPO
from bench.machine import emit
from bench.reliability.server import ServerProcess


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def read_query_image(path: str) -> tuple[bytes, str]:
    """The bytes of the image every request sends, and its Content-Type (from the file name)."""
    with open(path, "rb") as handle:
        data = handle.read()
    ext = os.path.splitext(path)[1].lower()
    return data, {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(ext, "application/octet-stream")


def server_timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


def start_server(args) -> ServerProcess:
    extra = (("--checkpoint", args.checkpoint) if args.checkpoint else ()) + \
        (("--torch-threads", str(args.torch_threads)) if args.torch_threads else ())
    # OpenMP as the measured runs had it (its default: one thread per core), not the suites' single thread
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))}
    server = ServerProcess(args.index, workers=args.workers, threads=args.threads, extra_args=extra, env=env)
    return server.start(timeout=300)


def one_client(url: str, data: bytes, mime: str, n: int, k: int) -> tuple[list[float], list[dict]]:
    latencies, timings = [], []
    with requests.Session() as http:
        for _ in range(n):
            started = time.perf_counter()
            r = http.post(f"{url}/api/search?k={k}", data=data, headers={"Content-Type": mime}, timeout=60)
            latencies.append((time.perf_counter() - started) * 1000.0)
            r.raise_for_status()
            timings.append(server_timing(r.headers.get("Server-Timing", "")))
    return latencies, timings


def throughput(url: str, data: bytes, mime: str, clients: int, max_requests: int, max_seconds: float, k: int) -> dict:
    lock, done, errors, latencies = threading.Lock(), [0], [0], []
    stop_at = time.perf_counter() + max_seconds

    def worker() -> None:
        with requests.Session() as http:
            while time.perf_counter() < stop_at:
                with lock:
                    if done[0] >= max_requests:
                        return
                    done[0] += 1
                started = time.perf_counter()
                try:
                    ok = http.post(f"{url}/api/search?k={k}", data=data, headers={"Content-Type": mime},
                                   timeout=60).status_code == 200
                except requests.RequestException:
                    ok = False
                with lock:
                    latencies.append((time.perf_counter() - started) * 1000.0)
                    errors[0] += not ok

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    return {"clients": clients, "requests": len(latencies), "errors": errors[0], "seconds": round(seconds, 3),
            "requests_per_s": round(len(latencies) / seconds, 1), "p50_ms": round(percentile(latencies, 50), 2),
            "p95_ms": round(percentile(latencies, 95), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--image", required=True, help="query image file sent in every request")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--name", default="default", help="result file: bench/results/api_latency_<name>.json")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--throughput-requests", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=20.0, help="max seconds of the throughput phase")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    data, mime = read_query_image(args.image)
    server = start_server(args)
    url = server.url
    try:
        one_client(url, data, mime, args.warmup, args.k)
        latencies, timings = one_client(url, data, mime, args.requests, args.k)
        split = {key: round(statistics.fmean(t[key] for t in timings if key in t), 3)
                 for key in ("decode", "embed", "search", "vote", "total", "encode")
                 if any(key in t for t in timings)}
        load = throughput(url, data, mime, args.concurrency, args.throughput_requests, args.duration, args.k)
    finally:
        server.stop()
    result = {
        "benchmark": "api_latency", "name": args.name, "index": os.path.abspath(args.index),
        "image": os.path.abspath(args.image), "image_bytes": len(data),
        "server": {"workers": args.workers, "threads": args.threads, "torch_threads": args.torch_threads, "k": args.k},
        "single_client": {"requests": len(latencies), "p50_ms": round(percentile(latencies, 50), 2),
                          "p95_ms": round(percentile(latencies, 95), 2), "p99_ms": round(percentile(latencies, 99), 2),
                          "mean_ms": round(statistics.fmean(latencies), 2)},
        "server_timing_mean_ms": split,
        "throughput": load,
    }
    emit(result, args.out or os.path.join(REPO, "bench", "results", f"api_latency_{args.name}.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
