"""ANN benchmark of the index layouts IndexStore builds: Flat vs HNSW vs IVF-PQ (and sklearn brute force).

For each layout: build time, bytes per vector (serialised size / n), single-query QPS (a loop of one
query at a time), batched QPS, recall@10 against exact Flat search.  Indexes are built with the same
``index.factory`` functions and defaults as ``IndexStore``.

Default data: 1M synthetic 128-d vectors from a seeded Gaussian mixture (2000 centres on the unit sphere,
isotropic noise, then L2-normalised), because uniformly random vectors have no neighbourhood structure
and are an unrealistic worst case for ANN.  ``--embeddings FILE.npy`` runs on real ``(n, d)`` embeddings,
holding out ``--queries`` random rows as queries.

    .venv/bin/python -m bench.index_ann            # full run, ~7 min on 2 cores
    .venv/bin/python -m bench.index_ann --n 50000  # quick try
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Iterator

import faiss
import numpy as np

from bench.machine import emit
from index import factory
from index.config import IndexConfig, auto_pq_m

log = logging.getLogger("bench.index_ann")


def mixture(n: int, d: int, centres: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``(n, d) float32`` L2-normalised points around ``centres`` random unit centres."""
    c = rng.standard_normal((centres, d), dtype=np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)]
    x += noise * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


MIXTURE_BLOCK = 100_000  # vectors per seeded block of mixture_chunks (the data depend on it: keep it fixed)


def mixture_chunks(n: int, d: int, centres: int, noise: float, seed: int) -> Iterator[np.ndarray]:
    """The distribution of :func:`mixture` with ``rng = default_rng(seed)`` (the same centres), as
    ``(<= MIXTURE_BLOCK, d) float32`` blocks drawn from per-block seeded generators: a 10M collection never sits
    in memory, and any process draws the same collection again, block by block."""
    c = _centres(d, centres, seed)
    for i, start in enumerate(range(0, n, MIXTURE_BLOCK)):
        rng = np.random.default_rng([seed, i])
        m = min(MIXTURE_BLOCK, n - start)
        x = c[rng.integers(0, centres, m)]
        x += noise * rng.standard_normal((m, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield x


def mixture_queries(nq: int, d: int, centres: int, noise: float, seed: int) -> np.ndarray:
    """``(nq, d) float32`` fresh points around the centres that :func:`mixture` drew from ``default_rng(seed)``."""
    c = _centres(d, centres, seed)
    q_rng = np.random.default_rng(seed + 1)
    xq = c[q_rng.integers(0, centres, nq)]
    xq += noise * q_rng.standard_normal(xq.shape, dtype=np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    return xq


def _centres(d: int, centres: int, seed: int) -> np.ndarray:
    c = np.random.default_rng(seed).standard_normal((centres, d), dtype=np.float32)  # mixture()'s first draw
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return c


def recall_at(I: np.ndarray, gt: np.ndarray, k: int) -> float:
    """Mean |top-k found ∩ top-k true| / k for ``I, gt: (nq, >=k)``."""
    hits = sum(len(np.intersect1d(a[:k], b[:k])) for a, b in zip(I, gt))
    return hits / (k * len(gt))


def timed_single(index: faiss.Index, xq: np.ndarray, k: int, params) -> tuple[float, np.ndarray]:
    """QPS of searching ``xq`` one query at a time in one OpenMP thread, and the ``(nq, k)`` ids."""
    out = np.empty((len(xq), k), dtype=np.int64)
    with factory.omp_threads(1):  # as IndexStore.search does for small batches
        for i in range(min(5, len(xq))):  # warm-up
            factory.search(index, xq[i:i + 1], k, params)
        t0 = time.perf_counter()
        for i in range(len(xq)):
            out[i] = factory.search(index, xq[i:i + 1], k, params)[1][0]
        return len(xq) / (time.perf_counter() - t0), out


def timed_batch(index: faiss.Index, xq: np.ndarray, k: int, params) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    _, I = factory.search(index, xq, k, params)
    return len(xq) / (time.perf_counter() - t0), I


def build(kind: str, xb: np.ndarray, config: IndexConfig) -> tuple[faiss.Index, str, float, float]:
    n, d = xb.shape
    fstring = factory.factory_string(kind, d, config, n)
    t0 = time.perf_counter()
    index = factory.new_index(fstring, d, config)
    factory.train_if_needed(index, xb, config)
    index.add_with_ids(xb, np.arange(n, dtype=np.int64))
    seconds = time.perf_counter() - t0
    size = len(faiss.serialize_index(index))
    return index, fstring, seconds, size / n


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="database vectors (synthetic)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--centres", type=int, default=2000)
    ap.add_argument("--noise", type=float, default=0.08, help="per-dimension std of the mixture noise")
    ap.add_argument("--embeddings", help="(n, d) .npy of real embeddings instead of synthetic data")
    ap.add_argument("--queries", type=int, default=2000, help="batched queries (also the recall set)")
    ap.add_argument("--single", type=int, default=1000, help="queries for the one-at-a-time loop")
    ap.add_argument("--flat-single", type=int, default=50, help="one-at-a-time queries for exact Flat")
    ap.add_argument("--sklearn-queries", type=int, default=1000)
    ap.add_argument("--nlist", type=int, default=None,
                    help="IVF lists (default sqrt(n): faster to train on 2 cores than the store's 4*sqrt(n) rule)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="bench/results/index_ann.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    k = args.k

    if args.embeddings:
        x = np.load(args.embeddings).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        perm = rng.permutation(len(x))
        nq = min(args.queries, len(x) // 10)
        xq, xb = np.ascontiguousarray(x[perm[:nq]]), np.ascontiguousarray(x[perm[nq:]])
        data = {"source": os.path.abspath(args.embeddings), "held_out_queries": nq}
    else:
        xb = mixture(args.n, args.dim, args.centres, args.noise, rng)
        xq = mixture_queries(args.queries, args.dim, args.centres, args.noise, args.seed)
        data = {"source": "synthetic Gaussian mixture on the unit sphere (not uniform: uniform random "
                          "vectors lack neighbourhood structure and are an unrealistic ANN worst case)",
                "centres": args.centres, "noise_std_per_dim": args.noise, "seed": args.seed}
    n, d = xb.shape
    data.update(n=n, dim=d, queries=len(xq), k=k)
    nlist = args.nlist or max(16, int(np.sqrt(n)))
    config = IndexConfig(ivf_nlist=nlist, train_sample=max(50_000, 40 * nlist))
    results: dict = {}
    log.info("data: %d x %d, %d queries", n, d, len(xq))

    log.info("flat")
    # exact Flat: ground truth, batched and single-query speed
    flat, fstring, secs, bpv = build("flat", xb, config)
    timed_batch(flat, xq[:20], k, None)  # warm-up (first touch of the data)
    qps_batch, gt = timed_batch(flat, xq, k, None)
    nsingle = min(args.flat_single, len(xq))
    qps_single, I = timed_single(flat, xq[:nsingle], k, None)
    results["flat"] = {"factory": fstring, "build_s": round(secs, 2), "bytes_per_vector": round(bpv, 1),
                       "qps_single": round(qps_single, 1), "single_queries": nsingle,
                       "qps_batched": round(qps_batch, 1), "recall_at_10": 1.0}

    # scikit-learn brute force on the same normalised data, timed after faiss on the same batch (sklearn's
    # OpenMP threads keep spinning a moment after they finish).  "euclidean" ranks like cosine here and is
    # sklearn's fast multithreaded ArgKmin path, its strongest baseline; "cosine" is what one writes first.
    from sklearn.neighbors import NearestNeighbors

    from threadpoolctl import threadpool_limits

    results["sklearn_brute"] = {}
    runs = (("euclidean", args.sklearn_queries, args.threads), ("euclidean", args.sklearn_queries // 2, 1),
            ("cosine", args.sklearn_queries // 4, args.threads))
    for metric, nsk, threads in runs:
        nsk = min(nsk, len(xq))
        with threadpool_limits(threads), factory.omp_threads(threads):
            timed_batch(flat, xq[:20], k, None)  # warm-up
            flat_qps_same, _ = timed_batch(flat, xq[:nsk], k, None)
            nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric=metric, n_jobs=threads).fit(xb)
            t0 = time.perf_counter()
            _, I_sk = nn.kneighbors(xq[:nsk])
            sk_qps = nsk / (time.perf_counter() - t0)
        del nn
        time.sleep(1.0)
        log.info("sklearn %s, %d threads: %.1f qps (faiss %.1f)", metric, threads, sk_qps, flat_qps_same)
        results["sklearn_brute"][f"{metric}_{threads}thread"] = {
            "metric": metric, "threads": threads,
            "queries": nsk, "qps_batched": round(sk_qps, 1), "faiss_flat_qps_same_batch": round(flat_qps_same, 1),
            "faiss_flat_speedup": round(flat_qps_same / sk_qps, 2),
            "recall_at_10_vs_faiss": round(recall_at(I_sk, gt[:nsk], k), 4)}
    del flat

    nq1 = min(args.single, len(xq))
    log.info("hnsw build")
    hnsw, fstring, secs, bpv = build("hnsw", xb, config)
    sweep = []
    for ef in (16, 32, 64, 128, 256):
        p = factory.search_params(hnsw, ef_search=ef, nprobe=1, selector=None)
        qs, I1 = timed_single(hnsw, xq[:nq1], k, p)
        qb, Ib = timed_batch(hnsw, xq, k, p)
        sweep.append({"ef_search": ef, "qps_single": round(qs, 1), "qps_batched": round(qb, 1),
                      "recall_at_10": round(recall_at(Ib, gt, k), 4),
                      "speedup_single_vs_flat": round(qs / qps_single, 1)})
    ok = [s for s in sweep if s["recall_at_10"] >= 0.95]
    results["hnsw"] = {"factory": fstring, "ef_construction": config.ef_construction,
                       "build_s": round(secs, 2), "bytes_per_vector": round(bpv, 1), "sweep": sweep,
                       "default_ef_search": config.ef_search,
                       "best_meeting_target": min(ok, key=lambda s: s["ef_search"]) if ok else None}
    del hnsw

    log.info("ivfpq build")
    ivf, fstring, secs, bpv = build("ivfpq", xb, config)
    sweep = []
    for nprobe in (8, 16, 32, 64):
        p = factory.search_params(ivf, ef_search=1, nprobe=nprobe, selector=None)
        qs, _ = timed_single(ivf, xq[:nq1], k, p)
        qb, Ib = timed_batch(ivf, xq, k, p)
        sweep.append({"nprobe": nprobe, "qps_single": round(qs, 1), "qps_batched": round(qb, 1),
                      "recall_at_10": round(recall_at(Ib, gt, k), 4),
                      "speedup_single_vs_flat": round(qs / qps_single, 1)})
    results["ivfpq"] = {"factory": fstring, "pq_m": auto_pq_m(d), "train_sample": config.train_sample,
                        "build_s": round(secs, 2), "bytes_per_vector": round(bpv, 1), "sweep": sweep}

    best = results["hnsw"]["best_meeting_target"]
    targets = {
        "hnsw_recall_ge_0.95_at_ge_10x_flat_single_qps": bool(best and best["speedup_single_vs_flat"] >= 10),
        **{f"flat_batched_ge_3x_sklearn_{name}": r["faiss_flat_speedup"] >= 3
           for name, r in results["sklearn_brute"].items()},
    }
    out = {"name": "index_ann", "data": data, "threads": args.threads, "single_queries": nq1,
           "results": results, "targets_met": targets}
    emit(out, args.out)
    return out


if __name__ == "__main__":
    main()
