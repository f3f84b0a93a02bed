"""Figure: ``POST /api/search`` over loopback under ``wrk``, against the production server (``simsearch serve``:
gunicorn) started as a subprocess, once per runtime in the same run (issue 13, figure 2).

For each runtime (default: torch, then onnx): one connection (the latency a lone user sees), then
``--connections`` connections (throughput), each for ``--duration`` seconds after a warm-up, the request body
being the query image's bytes (as ``curl --data-binary`` sends it).  wrk's Lua ``done`` hook prints p50/p95/p99
and the counts as JSON.  Then 200 requests from Python read the server's own split (``Server-Timing``: decode,
embed, search, vote, encode) to show where the time goes.  ``wrk`` is installed by ``bash scripts/bench_setup.sh``.

    .venv/bin/python -m bench.api_load --index runs/fmnist-index --image query.png --name fashion_mnist
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile

import requests

from bench import REPO
from bench.api_latency import read_query_image, server_timing
from bench.machine import emit
from bench.reliability.server import ServerProcess

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "%(mime)s"
local f = assert(io.open("%(image)s", "rb"))
wrk.body = f:read("*all")
f:close()
wrk.path = "/api/search?k=%(k)d"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_s": %%.3f, "status_errors": %%d, "socket_errors": %%d, ' ..
    '"p50_ms": %%.3f, "p95_ms": %%.3f, "p99_ms": %%.3f, "mean_ms": %%.3f, "max_ms": %%.3f}\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000, latency.max / 1000))
end
"""


def run_wrk(url: str, script: str, connections: int, duration: float, threads: int) -> dict:
    command = ["wrk", "-t", str(min(threads, connections)), "-c", str(connections), "-d", f"{max(1, round(duration))}s",
               "--timeout", "10s", "-s", script, url]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRKJSON "))
    result = json.loads(line[len("WRKJSON "):])
    result["requests_per_s"] = round(result["requests"] / result["duration_s"], 1)
    result["connections"] = connections
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def stage_split(url: str, data: bytes, mime: str, k: int, n: int = 200) -> dict:
    timings = []
    with requests.Session() as http:
        for _ in range(n):
            r = http.post(f"{url}/api/search?k={k}", data=data, headers={"Content-Type": mime}, timeout=30)
            r.raise_for_status()
            timings.append(server_timing(r.headers.get("Server-Timing", "")))
    keys = sorted({key for t in timings for key in t})
    return {key: round(statistics.fmean(t.get(key, 0.0) for t in timings), 3) for key in keys}


def measure(args, runtime: str, script: str, data: bytes, mime: str) -> dict:
    extra = ("--runtime", runtime) + (("--checkpoint", args.checkpoint) if args.checkpoint else ())
    server = ServerProcess(args.index, workers=args.workers, threads=args.threads, extra_args=extra,
                           env={"OMP_NUM_THREADS": "1"})
    server.start(timeout=600)
    try:
        run_wrk(server.url, script, args.connections, args.warmup, args.wrk_threads)  # warm both workers
        single = run_wrk(server.url, script, 1, args.duration, 1)
        loaded = run_wrk(server.url, script, args.connections, args.duration, args.wrk_threads)
        split = stage_split(server.url, data, mime, args.k)
        health = requests.get(f"{server.url}/api/health", timeout=10).json()
    finally:
        server.stop()
    return {"runtime": runtime, "single_connection": single, "loaded": loaded, "server_timing_mean_ms": split,
            "health": {k: health.get(k) for k in ("runtime", "backend", "items") if k in health}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--image", required=True, help="query image file sent in every request")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--name", default="default", help="result file: bench/results/api_load_<name>.json")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnx"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before the runs")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: bash scripts/bench_setup.sh")
    data, mime = read_query_image(args.image)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(LUA % {"mime": mime, "image": os.path.abspath(args.image), "k": args.k})
        script = handle.name
    try:
        results = [measure(args, runtime, script, data, mime) for runtime in args.runtimes]
    finally:
        os.unlink(script)
    emit({"figure": "POST /api/search under wrk against simsearch serve (gunicorn), per runtime, one run",
          "command": f"python -m bench.api_load --index {args.index} --image {args.image} --name {args.name}",
          "index": os.path.abspath(args.index), "image_bytes": len(data),
          "server": {"workers": args.workers, "threads": args.threads, "k": args.k},
          "wrk": {"connections": args.connections, "threads": args.wrk_threads, "duration_s": args.duration},
          "results": results},
         os.path.join(REPO, "bench", "results", f"api_load_{args.name}.json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
