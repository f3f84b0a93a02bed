"""Catch-up: how soon a write acknowledged in one process is seen by a search in another, and what a process
holding a 1M-item HNSW index costs to open and to keep.

1. HTTP (``--index``, default the 60k Fashion-MNIST demo index; gunicorn 2 workers x 4 threads): a client
   adds an image on one connection and, the moment the 201 arrives, searches with the same image on a new
   connection (either worker).  Latency = from the 201 to the search answer that contains the new id
   (retrying until it does).  Also how many first searches already saw it.
2. Store level, across processes (``--store``, e.g. the 1M HNSW store kept by ``bench.write_latency
   --keep``): a child process adds a vector and reports the acknowledgement time (CLOCK_MONOTONIC, shared by
   all processes); this process, which holds the store open, searches for it at once.  Before that: the time
   to open the store from its checkpoint (no rebuild) and this process's resident memory afterwards.

    .venv/bin/python -m bench.catch_up --index runs/demo/index --store /tmp/hnsw-1m
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests

from bench import DEMO_INDEX, REPO, copy_index
from bench.machine import emit
from bench.reliability.server import ServerProcess
from bench.reliability.soak import unique_image
from bench.write_latency import percentiles_ms
from index import IndexStore

TOKEN = "bench-catch-up-" + os.urandom(6).hex()

_WRITER = r"""
import json, sys, time
import numpy as np
from index import IndexStore
store = IndexStore.open(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))
for line in sys.stdin:  # one write per line the parent sends
    x = rng.standard_normal((1, store.dim)).astype(np.float32)
    ids = store.add(x, labels=["catch-up"], paths=["catch-up.png"])
    acked = time.clock_gettime(time.CLOCK_MONOTONIC)
    print(json.dumps({"id": int(ids[0]), "acked": acked, "vector": x[0].tolist()}), flush=True)
"""


def http_catch_up(index: str, work: str, writes: int) -> dict:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    latencies, first_try, tries = [], 0, []
    with ServerProcess(index, token=TOKEN, workers=2, threads=4, log_path=os.path.join(work, "server.log")) as server:
        for i in range(writes):
            data = unique_image(424_242 + i)
            r = requests.post(f"{server.url}/api/images", headers=auth, data={"label": "catch-up"},
                              files={"image": ("c.png", data, "image/png")}, timeout=60)
            acked = time.perf_counter()
            item_id = r.json()["id"]
            for attempt in range(1, 1000):
                found = requests.post(f"{server.url}/api/search?k=3", files={"image": ("q.png", data, "image/png")},
                                      headers={"Connection": "close"}, timeout=60).json()
                if any(n["id"] == item_id for n in found["neighbors"]):
                    break
            latencies.append(time.perf_counter() - acked)
            tries.append(attempt)
            first_try += attempt == 1
    return {"writes": writes, "latency_ms": percentiles_ms(latencies), "seen_by_first_search": first_try,
            "max_searches_needed": max(tries)}


def resident_mb() -> float:
    """This process's resident memory now (VmRSS), in MB."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def store_catch_up(directory: str, writes: int) -> dict:
    started = time.perf_counter()
    store = IndexStore.open(directory)
    open_s = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_mb = resident_mb()
    stats = store.stats()
    env = {**os.environ, "PYTHONPATH": REPO}
    child = subprocess.Popen([sys.executable, "-c", _WRITER, directory, "7"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env, cwd=REPO, text=True)
    latencies, first_try = [], 0
    try:
        for _ in range(writes):
            child.stdin.write("go\n")
            child.stdin.flush()
            ack = json.loads(child.stdout.readline())
            x = np.array([ack["vector"]], dtype=np.float32)
            for attempt in range(1, 1000):
                hits = store.search(x, 3)[0]
                if any(h.id == ack["id"] for h in hits):
                    break
            latencies.append(time.clock_gettime(time.CLOCK_MONOTONIC) - ack["acked"])
            first_try += attempt == 1
    finally:
        child.stdin.close()
        child.wait(timeout=60)
        store.close()
    return {"items": stats["ntotal"], "factory": stats["factory"], "open_from_checkpoint_s": round(open_s, 2),
            "rss_after_open_mb": round(rss_mb, 1), "peak_rss_mb": round(peak_mb, 1), "writes": writes, "latency_ms": percentiles_ms(latencies),
            "seen_by_first_search": first_try}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.catch_up", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=DEMO_INDEX)
    parser.add_argument("--store", default=None, help="a large store to open and write (copied first)")
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "catch_up.json"))
    args = parser.parse_args(argv)
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench-catch-up-") as work:
        copy = copy_index(args.index, os.path.join(work, "index"))
        result["http"] = http_catch_up(copy, work, args.writes)
        if args.store:
            big = os.path.join(work, "store")
            shutil.copytree(args.store, big)
            result["store"] = store_catch_up(big, args.writes)
    emit({"benchmark": "catch_up", "index": os.path.abspath(args.index), "store": args.store,
          "target_p50_le_50ms": result["http"]["latency_ms"]["p50"] <= 50.0, **result}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
