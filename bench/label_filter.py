"""Label-filtered search on HNSW: the exact path (brute force over the class, ``index/label_filter.py``) against
the FAISS ``IDSelector`` path, by class size, and against what a filtered search did before (the class's ids
read from SQLite and a new selector at every request, the walk at ``ef_search``).

An ``--items`` HNSW32 index of clustered 128-d vectors with classes of several sizes (the largest at
``IndexConfig.exact_filter_max``, 20,000 by default; one above it), each class spread over the clusters;
``--queries`` single queries, k=10; the same queries unfiltered for reference.  For each class and path: per-query latency (cold: the first query after the class cache is
emptied; warm: the rest), the smallest number of hits a query got, and recall@10 against the exact answer.

    .venv/bin/python -m bench.label_filter --out bench/results/label_filter.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from bench.machine import emit
from bench.write_latency import percentiles_ms
from index import IndexConfig, IndexStore
from index.label_filter import LabelFilter

DIM = 128
MODEL = {"checkpoint_sha256": "fe" * 32, "embedding_dim": DIM, "metric": "cosine", "preprocess": {"size": 28}}
K = 10
CENTRES, NOISE = 2000, 0.08


def clustered(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 128) float32``: the Gaussian mixture of ``bench/index_ann.py`` (2,000 unit centres, noise 0.08),
    the same centres for every call, L2-normalised."""
    centres = np.random.default_rng(1234).standard_normal((CENTRES, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, CENTRES, n)] + NOISE * rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def old_search(store: IndexStore, view, xq: np.ndarray, label: str, ef_search: int):
    """A filtered search as it was: every id of the class from SQLite, a new IDSelector, the walk at ef."""
    with store._db.read_transaction() as conn:
        allowed = store._db.label_ids(conn, label)
    with view.lock.read():
        return view.search(xq, K, ef_search=ef_search, nprobe=1, allowed=allowed)


def measure(search, xq: np.ndarray, truth: list[set[int]], reset) -> dict:
    seconds, hits, recall = [], [], []
    for i, q in enumerate(xq):
        if i == 0:
            reset()
        started = time.perf_counter()
        _, I = search(q[None, :])
        seconds.append(time.perf_counter() - started)
        found = [int(j) for j in I[0] if j >= 0]
        hits.append(len(found))
        recall.append(len(set(found) & truth[i]) / K)
    return {"cold_ms": round(seconds[0] * 1000, 2), "warm_ms": percentiles_ms(seconds[1:]),
            "min_hits": min(hits), "mean_hits": round(float(np.mean(hits)), 2),
            "recall_at_10": round(float(np.mean(recall)), 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5_000, 20_000, 50_000])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    xb = clustered(args.items, rng)
    labels = np.array(["rest"] * args.items, dtype=object)
    order = rng.permutation(args.items)
    start = 0
    for size in args.sizes:
        labels[order[start:start + size]] = f"size {size}"
        start += size
    config = IndexConfig(index_type="hnsw", auto_snapshot=False)
    result = {"items": args.items, "dim": DIM, "k": K, "queries": args.queries, "factory": None,
              "exact_filter_max": config.exact_filter_max, "ef_search": config.ef_search, "classes": {}}
    with tempfile.TemporaryDirectory() as work:
        store = IndexStore.create(os.path.join(work, "index"), DIM, config=config, model_info=MODEL)
        try:
            started = time.perf_counter()
            store.add(xb, labels=list(labels), paths=[f"p/{i}.png" for i in range(args.items)])
            result["build_s"] = round(time.perf_counter() - started, 1)
            result["factory"] = store.factory
            view = store._keeper.view
            ids, stored = store.all_vectors()
            xq = clustered(args.queries, rng)
            everything = [set(ids[np.argsort(-row, kind="stable")[:K]].tolist()) for row in xq @ stored.T]

            def unfiltered(q):
                with view.lock.read():
                    return view.search(q, K, ef_search=config.ef_search, nprobe=1)

            result["unfiltered"] = measure(unfiltered, xq, everything, lambda: None)
            for size in args.sizes:
                label = f"size {size}"
                exact = LabelFilter(store._db, DIM, exact_max=10**9)
                faiss_path = LabelFilter(store._db, DIM, exact_max=0)
                mine = ids[labels[ids] == label]
                scores = xq @ stored[np.searchsorted(ids, mine)].T
                truth = [set(mine[np.argsort(-row, kind="stable")[:K]].tolist()) for row in scores]

                def run(f):
                    return lambda q: f.search(view, q, K, label, ef_search=config.ef_search, nprobe=1)

                def emptied(f):
                    return lambda: (f._vectors.clear(), f._ids.clear())

                result["classes"][label] = {
                    "size": size, "share": round(size / args.items, 4),
                    "path_at_default_threshold": "exact" if size <= config.exact_filter_max else "faiss",
                    "exact": measure(run(exact), xq, truth, emptied(exact)),
                    "faiss_selector": measure(run(faiss_path), xq, truth, emptied(faiss_path)),
                    "before": measure(lambda q: old_search(store, view, q, label, config.ef_search), xq, truth,
                                      lambda: None),
                }
        finally:
            store.close()
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
