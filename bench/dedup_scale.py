"""``simsearch index dedup`` at scale: time and peak memory, on the real 60k index and on synthetic vectors.

Each case runs in its own child process, so its peak resident memory (``ru_maxrss``) is its own; the figure
given is the peak during the dedup minus the resident memory just before it (the store open, the vectors
not yet read); the synthetic store is built in a process of its own.

* ``real``: a copy of the 60k Fashion-MNIST demo index (Flat), the demo model's 64-d embeddings, by the
  embeddings alone and with ``--pixels`` (every PNG decoded and hashed once);
* ``synthetic``: ``--synthetic`` 128-d vectors (a seeded Gaussian mixture on the unit sphere, as
  ``bench.index_ann``) with 1% planted near copies (cosine about 0.999), in an HNSW store (its build time
  is reported apart); recall of the planted pairs is reported too.

    .venv/bin/python -m bench.dedup_scale                        # 60k real + 200k synthetic, ~5 min
    .venv/bin/python -m bench.dedup_scale --synthetic 1000000    # the 1M case (HNSW build ~7 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench import DEMO_INDEX, REPO, copy_index
from bench.machine import emit

_CHILD = r"""
import json, os, resource, sys, time
import numpy as np
case, arg, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
from engine.dedup import find_duplicates
from index import IndexConfig
from index.location import create_store, open_store
from similarity.hygiene import DuplicateRule

def rss_mb():
    with open("/proc/self/status") as handle:
        return next(int(l.split()[1]) for l in handle if l.startswith("VmRSS")) / 1024

out = {}
if case == "synthetic-build":
    from bench.index_ann import mixture
    n = int(arg)
    rng = np.random.default_rng(0)
    planted = n // 100
    xb = mixture(n - planted, 128, 2000, 0.35, rng)
    src = rng.choice(n - planted, planted, replace=False)
    copies = xb[src] + 0.003 * rng.standard_normal((planted, 128), dtype=np.float32)
    xb = np.concatenate([xb, copies / np.linalg.norm(copies, axis=1, keepdims=True)])
    started = time.perf_counter()
    store = create_store(os.path.join(workdir, "synthetic"), 128,
                         config=IndexConfig(index_type="hnsw", auto_snapshot=False),
                         model_info={"checkpoint_sha256": "0" * 64, "embedding_dim": 128, "metric": "ip",
                                     "preprocess": {"bench": True}})
    ids = store.add(xb, labels=["x"] * n, paths=[f"img/{i}.png" for i in range(n)])
    store.snapshot()
    store.close()
    out["build_s"] = round(time.perf_counter() - started, 1)
    with open(os.path.join(workdir, "planted.json"), "w") as handle:
        json.dump([[int(ids[s]), int(ids[n - planted + j])] for j, s in enumerate(src.tolist())], handle)
    print(json.dumps(out))
    sys.exit(0)
if case == "synthetic":  # in a fresh process: the build's peak is not the dedup's
    with open(os.path.join(workdir, "planted.json")) as handle:
        truth = {tuple(pair) for pair in json.load(handle)}
    location, pixels = os.path.join(workdir, "synthetic"), False
else:
    location, pixels, truth = arg, case == "real-pixels", None
store = open_store(location)
before = rss_mb()
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
# without pixels the embedding alone decides at the candidate threshold (the descriptor tier of a model trained
# for copies); such members are unconfirmed, so they count under "unconfirmed", not "duplicates"
rule = DuplicateRule() if pixels else DuplicateRule(descriptor_cosine=DuplicateRule().cosine)
report = find_duplicates(store, rule=rule, pixels=pixels)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out.update({"items": report.items, "seconds": round(seconds, 1), "rss_before_mb": round(before, 1),
            "peak_rss_mb": round(peak, 1), "peak_rise_mb": round(peak - max(before, 0), 1),
            "peak_before_dedup_mb": round(peak_before, 1), **{k: v for k, v in report.summary().items()
                                                                  if k in ("groups", "near_pairs", "exact_pairs",
                                                                           "duplicates", "unconfirmed",
                                                                           "threshold")}})
if truth is not None:
    grouped = {frozenset(g_ids) for g_ids in ([m.id for m in g.members] for g in report.groups)}
    hit = sum(any(a in g and b in g for g in grouped) for a, b in truth)
    out["planted_pairs"] = len(truth)
    out["planted_found"] = hit
store.close()
print(json.dumps(out))
"""


def run_case(case: str, arg: str, workdir: str) -> dict:
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", _CHILD, case, arg, workdir], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=7200)
    if done.returncode:
        raise RuntimeError(f"{case} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"[dedup_scale] {case}: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=DEMO_INDEX)
    parser.add_argument("--synthetic", type=int, default=200_000)
    parser.add_argument("--no-pixels", action="store_true", help="skip the --pixels case on the real index")
    parser.add_argument("--out", default="bench/results/dedup_scale.json")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as workdir:
        real = copy_index(args.index, os.path.join(workdir, "real"))
        results["real_60k_embeddings"] = run_case("real", real, workdir)
        if not args.no_pixels:
            results["real_60k_pixels"] = run_case("real-pixels", real, workdir)
        built = run_case("synthetic-build", str(args.synthetic), workdir)
        results[f"synthetic_{args.synthetic}"] = {**built, **run_case("synthetic", str(args.synthetic), workdir)}
    emit({"benchmark": "dedup_scale", "index": os.path.relpath(args.index), "neighbours": 10,
          "rule": "cosine >= 0.99 (pixels: confirmed by pHash 0 bits, mirror included)", "results": results,
          "note": "peak_rise_mb: peak resident memory during the dedup minus the resident memory before it"},
         args.out)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"[dedup_scale] {time.time() - started:.0f} s", file=sys.stderr)
