"""HTTP writes and mixed load on a real server (gunicorn, 2 workers x 4 threads), new design against old.

On a copy of an index (default: the 60k Fashion-MNIST demo index) it measures, for this code and for the
code of commit ``--old-rev`` (the design before issue 11, run from a git checkout on an index it builds
itself from the same checkpoint and images):

1. one ``POST /api/images`` at a time (decode + embed + durable write), ``--adds`` times: p50 / p99;
   then as many ``DELETE``s;
2. ``--clients`` client threads for ``--seconds`` with ``--write-fraction`` of the requests writes
   (adds and deletes; reads are searches and similar-item lookups, mostly on new connections so that they
   reach both workers): requests/s, errors, deleted ids returned, then every acknowledged write checked on
   the running server and again after a restart.

    .venv/bin/python -m bench.mixed_load --index runs/demo/index        # ~8 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import requests

from bench import DEMO_INDEX, REPO, copy_index
from bench.machine import emit
from bench.reliability.server import ServerProcess
from bench.reliability.soak import run_soak, unique_image, verify_items
from bench.write_latency import OLD_REV, percentiles_ms
from engine.layout import MODEL_FILE
from similarity.data import FASHION_MNIST_PNG_ROOT

TOKEN = "bench-mixed-load-" + os.urandom(6).hex()


def sequential_writes(url: str, n: int, seed: int) -> dict:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    adds, deletes, ids = [], [], []
    with requests.Session() as http:
        for i in range(n):
            data = unique_image(seed * 100_000 + i)
            t0 = time.perf_counter()
            r = http.post(f"{url}/api/images", headers=auth, data={"label": "bench"},
                          files={"image": ("a.png", data, "image/png")}, timeout=120)
            adds.append(time.perf_counter() - t0)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        for item_id in ids:
            t0 = time.perf_counter()
            r = http.delete(f"{url}/api/images/{item_id}", headers=auth, timeout=120)
            deletes.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    return {"add_ms": percentiles_ms(adds), "delete_ms": percentiles_ms(deletes)}


def measure(index_dir: str, workdir: str, name: str, args, cwd: str = REPO) -> dict:
    log = os.path.join(workdir, f"{name}.log")
    queries = [unique_image(7919 + i) for i in range(16)]
    with ServerProcess(index_dir, token=TOKEN, workers=2, threads=4, log_path=log, cwd=cwd) as server:
        writes = sequential_writes(server.url, args.adds, seed=1)
        summary, state = run_soak(server.url, TOKEN, seconds=args.seconds, clients=args.clients, seed=args.seed,
                                  queries=queries, write_fraction=args.write_fraction)
        before = verify_items(server.url, state.live, state.deleted, search_sample=100)
    with ServerProcess(index_dir, token=TOKEN, workers=2, threads=4, log_path=log + ".restart", cwd=cwd) as server:
        after = verify_items(server.url, state.live, state.deleted, search_sample=100)
    return {"sequential": writes, "mixed": summary, "problems_before_restart": before[:10],
            "problems_after_restart": after[:10], "live_items_checked": len(state.live),
            "deleted_items_checked": len(state.deleted)}


def old_tree(rev: str, target: str) -> str:
    archive = subprocess.run(["git", "-C", REPO, "archive", rev, "similarity", "index", "api", "report", "simsearch"],
                             capture_output=True, check=True)
    os.makedirs(target)
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True)
    return target


def build_old_index(code: str, checkpoint: str, data: str, out: str) -> float:
    env = {**os.environ, "PYTHONPATH": code}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "simsearch.cli", "index", "build", "--checkpoint", checkpoint,
                    "--data", os.path.abspath(data),
                    "--out", out, "--quiet"], check=True, env=env, cwd=code, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mixed_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=DEMO_INDEX)
    parser.add_argument("--data", default=str(FASHION_MNIST_PNG_ROOT / "train"),
                        help="the images the index was built from, as a folder (old side)")
    parser.add_argument("--adds", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--write-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--old-rev", default=OLD_REV, help="'none' skips the old design")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "mixed_load.json"))
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-mixed-load-") as work:
        copy = copy_index(args.index, os.path.join(work, "new-index"))
        results["new"] = measure(copy, work, "new", args)
        if args.old_rev != "none":
            code = old_tree(args.old_rev, os.path.join(work, "old-code"))
            old_index = os.path.join(work, "old-index")
            build_s = build_old_index(code, os.path.join(args.index, MODEL_FILE), args.data, old_index)
            results["old"] = {"build_s": round(build_s, 1), **measure(old_index, work, "old", args, cwd=code)}
    new, old = results["new"], results.get("old")
    summary = {"new_add_p50_ms": new["sequential"]["add_ms"]["p50"],
               "new_mixed_requests_per_s": new["mixed"]["requests_per_s"], "new_mixed_errors": new["mixed"]["errors"],
               "target_add_p50_le_20ms": new["sequential"]["add_ms"]["p50"] <= 20.0,
               "target_mixed_ge_100_rps_0_errors": new["mixed"]["requests_per_s"] >= 100 and not new["mixed"]["errors"],
               "lost_after_restart": sum("acknowledged add" in p for p in new["problems_after_restart"])}
    if old:
        summary.update(old_add_p50_ms=old["sequential"]["add_ms"]["p50"],
                       old_mixed_requests_per_s=old["mixed"]["requests_per_s"], old_mixed_errors=old["mixed"]["errors"])
    emit({"benchmark": "mixed_load", "index": os.path.abspath(args.index), "old_design_rev": args.old_rev,
          "server": {"workers": 2, "threads": 4}, "clients": args.clients, "seconds": args.seconds,
          "write_fraction": args.write_fraction, "summary": summary, **results}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
