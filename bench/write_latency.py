"""Write latency against collection size: the SQLite-truth store against the old design, in the same run.

For each index type (Flat, HNSW) and size (10k, 100k, 1M synthetic 128-d vectors), it times one ``add`` of
a single vector and one ``remove`` of a single id, ``--writes`` times each:

* new: ``IndexStore.add`` / ``remove`` (one SQLite transaction, ``synchronous=FULL``, and this process's
  FAISS view caught up before it returns); at 10k also with ``synchronous=NORMAL``, the price of FULL;
* old: the store of commit ``--old-rev`` (the design before issue 11), checked out of git into a temporary
  folder and run in a child process: ``add`` / ``remove`` followed by ``save()``, which rewrote the whole
  FAISS file and metadata copy, as every API write did.

The old design's writes grow with the collection (a 1M HNSW save writes ~0.8 GB), so it runs fewer of them
(``--old-writes``).  Both sides start from the same vectors and the same FAISS index (built once here).

    .venv/bin/python -m bench.write_latency                           # ~20 min on 2 cores (1M HNSW build)
    .venv/bin/python -m bench.write_latency --sizes 10000 --writes 50 # quick try
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench import REPO
from bench.index_ann import mixture
from bench.machine import emit
from index import IndexConfig, IndexStore
from index.keeper import SNAPSHOT_DIR

OLD_REV = "6c06d63"  # the last commit of the generation-file design
MODEL = {"checkpoint_sha256": "0" * 64, "embedding_dim": 128, "metric": "cosine", "preprocess": {"bench": True}}
CONFIGS = {"flat": IndexConfig(index_type="flat", auto_snapshot=False),
           "hnsw": IndexConfig(index_type="hnsw", auto_snapshot=False)}

# run by the old code in a child process: lay out the old format from the new store's checkpoint file, then
# time add+save and remove+save
_OLD_SIDE = r"""
import json, os, shutil, sys, time
import numpy as np
import faiss
from index import IndexConfig, IndexStore, persist
from index.metadata import MetadataDB
args = json.loads(sys.argv[1])
d, n, writes = args["dir"], args["n"], args["writes"]
os.makedirs(d)
shutil.copyfile(args["faiss"], os.path.join(d, persist.index_file(1)))
meta = MetadataDB.create()
ids = meta.allocate_ids(n)
meta.insert(ids, [f"img/{i}.png" for i in range(n)], [f"c{i % 10}" for i in range(n)], [None] * n)
persist.write_file_atomic(os.path.join(d, persist.meta_file(1)), meta.save)
files = {"index": persist.index_file(1), "metadata": persist.meta_file(1)}
sums = {k: persist.sha256_file(os.path.join(d, v)) for k, v in files.items()}
config = IndexConfig(**{k: v for k, v in args["config"].items() if k in IndexConfig.__dataclass_fields__})
manifest = {"format": persist.FORMAT, "format_version": persist.FORMAT_VERSION, "generation": 1, "dim": 128,
            "model": args["model"], "config": config.to_dict(), "index_type": args["type"],
            "factory": args["factory"], "files": files, "checksums": sums, "created_at": "bench"}
persist.write_manifest(d, manifest)
store = IndexStore.open(d)
rng = np.random.default_rng(1)
adds, removes = [], []
for i in range(writes):
    x = rng.standard_normal((1, 128)).astype(np.float32)
    t0 = time.perf_counter()
    store.add(x, labels=["new"], paths=[f"new/{i}.png"])
    store.save()
    adds.append(time.perf_counter() - t0)
victims = rng.choice(n, writes, replace=False)
for v in victims:
    t0 = time.perf_counter()
    store.remove([int(v)])
    store.save()
    removes.append(time.perf_counter() - t0)
print(json.dumps({"add_s": adds, "remove_s": removes}))
"""


def percentiles_ms(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000.0
    return {"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3),
            "mean": round(float(ms.mean()), 3), "n": len(ms)}


def build_new(directory: str, xb: np.ndarray, index_type: str, synchronous: str = "full") -> tuple[IndexStore, float]:
    """A new-design store holding ``xb``, with a checkpoint (as ``simsearch index build`` leaves it)."""
    started = time.perf_counter()
    store = IndexStore.create(directory, xb.shape[1], config=CONFIGS[index_type], model_info=MODEL,
                              synchronous=synchronous)
    store.add(xb, labels=[f"c{i % 10}" for i in range(len(xb))], paths=[f"img/{i}.png" for i in range(len(xb))])
    store.snapshot()
    return store, time.perf_counter() - started


def time_new(store: IndexStore, writes: int, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    adds, removes = [], []
    for i in range(writes):
        x = rng.standard_normal((1, 128)).astype(np.float32)
        t0 = time.perf_counter()
        store.add(x, labels=["new"], paths=[f"new/{i}.png"])
        adds.append(time.perf_counter() - t0)
    for v in rng.choice(n, writes, replace=False):
        t0 = time.perf_counter()
        store.remove([int(v)])
        removes.append(time.perf_counter() - t0)
    return {"add_ms": percentiles_ms(adds), "remove_ms": percentiles_ms(removes)}


def time_old(old_code: str, workdir: str, checkpoint_file: str, n: int, index_type: str, factory: str,
             writes: int) -> dict:
    args = {"dir": os.path.join(workdir, "old"), "n": n, "writes": writes, "faiss": checkpoint_file,
            "type": index_type, "factory": factory, "model": MODEL, "config": CONFIGS[index_type].to_dict()}
    env = {**os.environ, "PYTHONPATH": old_code}
    out = subprocess.run([sys.executable, "-c", _OLD_SIDE, json.dumps(args)], capture_output=True, text=True,
                         env=env, cwd=old_code, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"old design failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    shutil.rmtree(args["dir"], ignore_errors=True)
    return {"add_ms": percentiles_ms(result["add_s"]), "remove_ms": percentiles_ms(result["remove_s"])}


def checkout(rev: str, target: str) -> str:
    """The ``index`` package of commit ``rev`` under ``target`` (from git, no network)."""
    archive = subprocess.run(["git", "-C", REPO, "archive", rev, "index"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.write_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--types", default="flat,hnsw")
    parser.add_argument("--writes", type=int, default=200, help="adds and removes per case, new design")
    parser.add_argument("--old-writes", default="50,20,5", help="per size, old design (each one saves it all)")
    parser.add_argument("--old-rev", default=OLD_REV)
    parser.add_argument("--keep", default=None, help="keep the 1M HNSW store of the new design here")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "write_latency.json"))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    old_writes = [int(s) for s in args.old_writes.split(",")]
    old_writes += [old_writes[-1]] * (len(sizes) - len(old_writes))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-write-latency-") as work:
        os.makedirs(os.path.join(work, "old-code"))
        old_code = checkout(args.old_rev, os.path.join(work, "old-code"))
        for index_type in args.types.split(","):
            for n, n_old in zip(sizes, old_writes):
                xb = mixture(n, 128, 2000, 0.35, np.random.default_rng(n))
                case_dir = os.path.join(work, f"{index_type}-{n}")
                store, build_s = build_new(os.path.join(case_dir, "new"), xb, index_type)
                row = {"index_type": index_type, "n": n, "new_build_s": round(build_s, 1),
                       "new": time_new(store, args.writes, n, seed=1)}
                if n == sizes[0]:
                    normal, _ = build_new(os.path.join(case_dir, "new-normal"), xb, index_type, synchronous="normal")
                    row["new_synchronous_normal"] = time_new(normal, args.writes, n, seed=1)
                    normal.close()
                row["new_stats"] = {k: store.stats()[k] for k in ("ntotal", "stored_vectors", "tombstones")}
                snapshot_dir = os.path.join(case_dir, "new", SNAPSHOT_DIR)
                first = sorted((f for f in os.listdir(snapshot_dir) if f.endswith(".faiss")),
                               key=lambda f: int(f.split(".")[1]))[0]
                factory = store.factory
                store.close()
                row["old"] = time_old(old_code, case_dir, os.path.join(snapshot_dir, first), n, index_type,
                                      factory, n_old)
                row["add_p50_speedup"] = round(row["old"]["add_ms"]["p50"] / row["new"]["add_ms"]["p50"], 1)
                results.append(row)
                print(json.dumps(row), flush=True)
                if args.keep and index_type == "hnsw" and n == max(sizes):
                    shutil.rmtree(args.keep, ignore_errors=True)
                    shutil.move(os.path.join(case_dir, "new"), args.keep)
                shutil.rmtree(case_dir, ignore_errors=True)
    by = {(r["index_type"], r["n"]): r for r in results}
    summary = {}
    for index_type in args.types.split(","):
        small, large = by.get((index_type, min(sizes))), by.get((index_type, max(sizes)))
        if small and large:
            summary[index_type] = {
                "add_p50_ms_at_largest": large["new"]["add_ms"]["p50"],
                "add_p50_largest_over_smallest": round(large["new"]["add_ms"]["p50"] / small["new"]["add_ms"]["p50"], 2),
                "target_add_p50_le_10ms_at_1M": large["new"]["add_ms"]["p50"] <= 10.0,
                "target_le_2x_of_10k": large["new"]["add_ms"]["p50"] <= 2 * small["new"]["add_ms"]["p50"]}
    emit({"benchmark": "write_latency", "dim": 128, "old_design_rev": args.old_rev, "cases": results,
          "summary": summary}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
