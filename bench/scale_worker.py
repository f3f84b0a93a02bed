"""The child processes of ``bench.scale``: each step runs alone so that its memory (VmRSS, VmHWM) is its own.

    python -m bench.scale_worker build   SPEC.json   # IndexStore.create + add in chunks + snapshot
    python -m bench.scale_worker serve   SPEC.json   # open, then single queries, sweeps and 2-thread QPS
    python -m bench.scale_worker compact SPEC.json   # add p50 at this size, a checkpoint, then a compaction
    python -m bench.scale_worker hnswlib SPEC.json   # the outside reference, built and queried in one process

Each prints one JSON line (the last line of stdout) and writes the neighbour ids it found to ``SPEC["out"]``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from bench.index_ann import mixture_chunks

CHUNK = 20_000  # vectors per add transaction
MODEL = {"checkpoint_sha256": "0" * 64, "embedding_dim": 0, "metric": "cosine", "preprocess": {}, "name": "bench"}


def memory_mb() -> dict:
    """This process's resident memory now (VmRSS) and at its peak so far (VmHWM), in MB."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key.lower() + "_mb"] = round(int(value.split()[0]) / 1024, 1)
    return out


def reset_peak() -> None:
    """Reset this process's VmHWM to its VmRSS (Linux >= 4.0, ``/proc/self/clear_refs``), so that the next
    :func:`memory_mb` peak is that of the step in between."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def data_chunks(data: dict, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """The collection of ``data`` (a synthetic mixture, or a ``.npy`` file) as ``(<= chunk, d) float32`` blocks."""
    blocks = ([np.load(data["path"], mmap_mode="r")] if data["kind"] == "npy" else
              mixture_chunks(data["n"], data["dim"], data["centres"], data["noise"], data["seed"]))
    for block in blocks:
        for start in range(0, len(block), chunk):
            yield np.ascontiguousarray(block[start:start + chunk], dtype=np.float32)


def batches(blocks: Iterator[np.ndarray], first: int) -> Iterator[np.ndarray]:
    """``blocks`` as they come, except that the first batch gathers at least ``first`` vectors (an IVF index
    trains on its first batch)."""
    pending: list[np.ndarray] = []
    for block in blocks:
        pending.append(block)
        if sum(len(b) for b in pending) >= first:
            yield np.concatenate(pending)
            pending, first = [], 0
    if pending:
        yield np.concatenate(pending)


def build(spec: dict) -> dict:
    """Create the store, add the collection in chunks (the first one large enough to train on), snapshot."""
    from index import IndexConfig, IndexStore
    from index.config import auto_nlist

    data, n = spec["data"], spec["data"]["n"]
    config = IndexConfig(**spec["config"])
    first = max(config.train_sample, 39 * (config.ivf_nlist or auto_nlist(n))) if config.index_type == "ivfpq" else 0
    started = time.perf_counter()
    store = IndexStore.create(spec["dir"], data["dim"], config=config,
                              model_info={**MODEL, "embedding_dim": data["dim"]}, synchronous="normal")
    added = 0
    with tqdm(total=n, desc=f"build {config.index_type}", unit="vec", file=sys.stderr, mininterval=5) as bar:
        for xb in batches(data_chunks(data), first):
            store.add(xb, labels=[f"c{(added + i) % 10}" for i in range(len(xb))],
                      paths=[f"synthetic/{added + i}.png" for i in range(len(xb))])
            added += len(xb)
            bar.update(len(xb))
    add_s = time.perf_counter() - started
    store.snapshot()
    seconds = time.perf_counter() - started
    stats = store.stats()
    store.close()
    return {"build_s": round(seconds, 1), "add_phase_s": round(add_s, 1), "snapshot_s": round(seconds - add_s, 1),
            "factory": stats["factory"], "bytes_per_vector": stats["bytes_per_vector"],
            "build_peak_rss_mb": memory_mb()["vmhwm_mb"], "disk_bytes": disk_bytes(spec["dir"])}


def serve(spec: dict) -> dict:
    """Open the index and serve: per setting, one query at a time (p50, p99, the ids for recall); then the
    default setting from 2 threads at once (QPS).  Memory: before opening, once open, while serving, peak."""
    from index import IndexStore

    xq = np.load(spec["queries"])
    base = memory_mb()["vmrss_mb"]
    started = time.perf_counter()
    store = IndexStore.open(spec["dir"])
    open_s = time.perf_counter() - started
    opened = memory_mb()["vmrss_mb"]
    settings, ids = [], {}
    for i, setting in enumerate(spec["settings"]):
        found = np.full((len(xq), 10), -1, dtype=np.int64)
        times = np.empty(len(xq))
        for q in tqdm(range(len(xq)), desc=f"serve {setting}", file=sys.stderr, mininterval=5, leave=False):
            t0 = time.perf_counter()
            (hits,) = store.search(xq[q:q + 1], 10, **setting)
            times[q] = time.perf_counter() - t0
            found[q, :len(hits)] = [h.id for h in hits]
        ids[f"s{i}"] = found
        settings.append({**setting, "p50_ms": round(float(np.median(times)) * 1e3, 3),
                         "p99_ms": round(float(np.percentile(times, 99)) * 1e3, 3)})
    qps = two_thread_qps(lambda q: store.search(xq[q:q + 1], 10), len(xq))
    stats = store.stats()
    np.savez(spec["out"], **ids)
    return {"open_s": round(open_s, 2), "settings": settings, "qps_2_threads": qps,
            "rss_before_open_mb": base, "rss_open_mb": opened, **memory_mb(),
            "factory": stats["factory"], "bytes_per_vector": stats["bytes_per_vector"],
            "index_params": stats["index_params"]}


def two_thread_qps(search, nq: int, seconds: float = 5.0) -> float:
    """Queries per second of ``search(q)`` called from 2 threads at once, each cycling over ``nq`` queries."""
    counts = [0, 0]
    deadline = time.perf_counter() + seconds

    def loop(t: int) -> None:
        q = t
        while time.perf_counter() < deadline:
            search(q % nq)
            counts[t] += 1
            q += 2

    threads = [threading.Thread(target=loop, args=(t,)) for t in range(2)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return round(sum(counts) / (time.perf_counter() - started), 1)


def compact(spec: dict) -> dict:
    """Single adds at this size (p50), a checkpoint (its time and the process's peak memory so far), then a
    compaction that rebuilds the index from the truth."""
    from index import IndexStore

    store = IndexStore.open(spec["dir"])
    opened = memory_mb()
    rng = np.random.default_rng(7)
    times = []
    for i in range(spec.get("adds", 30)):
        x = rng.standard_normal((1, store.dim), dtype=np.float32)
        t0 = time.perf_counter()
        store.add(x, labels=["added"], paths=[f"added/{i}.png"])
        times.append(time.perf_counter() - t0)
    after_adds = memory_mb()["vmhwm_mb"]  # a Flat/HNSW add may reallocate FAISS's vector storage (+1 copy)
    reset_peak()
    started = time.perf_counter()
    store.snapshot()  # a checkpoint of the serving process, with the adds above in it
    checkpoint_s = time.perf_counter() - started
    checkpointed = memory_mb()["vmhwm_mb"]  # the peak since the reset: the checkpoint's own
    store.remove([0])  # one tombstone, so that force=True rebuilds every layout
    reset_peak()
    started = time.perf_counter()
    result = store.compact(force=True)
    seconds = time.perf_counter() - started
    store.close()
    return {"add_p50_ms": round(float(np.median(times)) * 1e3, 2), "compact_s": round(seconds, 1),
            "compact_rebuilt": result.rebuilt, "rss_open_mb": opened["vmrss_mb"],
            "adds_peak_rss_mb": after_adds, "checkpoint_s": round(checkpoint_s, 2),
            "checkpoint_peak_rss_mb": checkpointed,
            "compact_peak_rss_mb": memory_mb()["vmhwm_mb"], "disk_bytes_after": disk_bytes(spec["dir"])}


def hnswlib_row(spec: dict) -> dict:
    """hnswlib (M, ef_construction as our HNSW) built from the same chunks, queried one at a time, per ef."""
    import hnswlib

    data, xq = spec["data"], np.load(spec["queries"])
    base = memory_mb()["vmrss_mb"]
    index = hnswlib.Index(space="ip", dim=data["dim"])
    started = time.perf_counter()
    index.init_index(max_elements=data["n"], M=spec["m"], ef_construction=spec["ef_construction"], random_seed=0)
    index.set_num_threads(2)
    added = 0
    with tqdm(total=data["n"], desc="build hnswlib", unit="vec", file=sys.stderr, mininterval=5) as bar:
        for block in data_chunks(data):
            index.add_items(block, np.arange(added, added + len(block)))
            added += len(block)
            bar.update(len(block))
    build_s = time.perf_counter() - started
    built = memory_mb()
    index.set_num_threads(1)
    settings, ids = [], {}
    for i, ef in enumerate(spec["ef_search"]):
        index.set_ef(ef)
        found = np.empty((len(xq), 10), dtype=np.int64)
        times = np.empty(len(xq))
        for q in range(len(xq)):
            t0 = time.perf_counter()
            labels, _ = index.knn_query(xq[q:q + 1], k=10)
            times[q] = time.perf_counter() - t0
            found[q] = labels[0]
        ids[f"s{i}"] = found
        settings.append({"ef_search": ef, "p50_ms": round(float(np.median(times)) * 1e3, 3),
                         "p99_ms": round(float(np.percentile(times, 99)) * 1e3, 3)})
    index.set_ef(spec["ef_search"][0])
    qps = two_thread_qps(lambda q: index.knn_query(xq[q:q + 1], k=10), len(xq))
    np.savez(spec["out"], **ids)
    return {"build_s": round(build_s, 1), "settings": settings, "qps_2_threads": qps, "rss_before_open_mb": base,
            "rss_open_mb": built["vmrss_mb"], **memory_mb(), "hnswlib_version": getattr(hnswlib, "__version__", None)}


def disk_bytes(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(directory) for f in files)


STEPS = {"build": build, "serve": serve, "compact": compact, "hnswlib": hnswlib_row}

if __name__ == "__main__":
    import faiss

    faiss.omp_set_num_threads(2)
    step, spec_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as handle:
        result = STEPS[step](json.load(handle))
    print(json.dumps(result))
