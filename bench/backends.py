"""The two stores side by side, in one run, on the same vectors: embedded FAISS + SQLite against Milvus.

From an index (default: the 60k Fashion-MNIST demo index, ``bash scripts/demo.sh``) it loads the same
vectors, labels and paths into a fresh store of each back end, with the same index type and parameters
(``--type``, default hnsw: M=32, efConstruction=80, ef=64), then measures, one back end at a time:

* ``load_s``: loading the vectors (embedded: one transaction + a FAISS checkpoint; Milvus: inserts + flush);
* ``recall_at_10``: of ``--recall-queries`` Fashion-MNIST *test* images (embedded by the demo model) against
  exact search over the same vectors, and the in-process single-query search p50;
* over HTTP, against ``simsearch serve`` (gunicorn, 2 workers x 4 threads) from this process:
  ``POST /api/search?k=10`` p50/p99 over ``--searches`` test images sent one at a time, ``POST /api/images``
  p50 over ``--adds`` new images (each deleted again afterwards);
* memory: the resident set of each API worker after the load, and of the Milvus server process.

Back ends: ``embedded``, ``milvus-lite`` (``milvus-lite server`` on 127.0.0.1) and, with ``--standalone``,
the real Milvus 2.3.5 standalone server of the ``milvus`` PyPI package (slow tier), twice: with the server's
default ``proxy.timeTickInterval`` (200 ms), which a Strong read waits for, and with 20 ms.

    .venv/bin/python -m bench.backends                 # embedded + milvus-lite, ~10 min on 2 cores
    .venv/bin/python -m bench.backends --standalone    # + Milvus 2.3.5
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import psutil
import requests

from bench import DEMO_INDEX
from bench.machine import emit
from bench.reliability.server import ServerProcess
from bench.reliability.soak import unique_image
from bench.write_latency import percentiles_ms
from engine.layout import MODEL_FILE
from index import IndexConfig, Maintainable
from index.location import create_store, open_store
from similarity.checkpoint import load_checkpoint
from similarity.data import FASHION_MNIST_PNG_ROOT, load_labelled_images

TOKEN = "bench-backends-" + os.urandom(6).hex()


def load_source(index: str) -> dict:
    store = open_store(index)
    try:
        ids, xb = store.all_vectors()
        metas = store.get_many(ids)
        return {"ids": ids, "xb": xb, "labels": [metas[int(i)].label for i in ids],
                "paths": [metas[int(i)].path for i in ids], "model_info": store.model_info,
                "home": store.home, "dim": store.dim}
    finally:
        store.close()


def fill(location: str, source: dict, config: IndexConfig, home: str) -> tuple[dict, float]:
    """A new store at ``location`` holding the source's vectors; returns (id -> row, seconds)."""
    os.makedirs(home, exist_ok=True)
    shutil.copyfile(os.path.join(source["home"], MODEL_FILE), os.path.join(home, MODEL_FILE))
    started = time.perf_counter()
    store = create_store(location, source["dim"], config=config, model_info=source["model_info"],
                         home=None if location == home else home)
    try:
        ids = store.add(source["xb"], labels=source["labels"], paths=source["paths"])
        if isinstance(store, Maintainable):
            store.snapshot()
        else:
            store.flush()  # Milvus: seal the segments
        len(store)  # the load is done when the store answers with everything
    finally:
        store.close()
    return {int(i): row for row, i in enumerate(ids)}, time.perf_counter() - started


def recall(location: str, rows: dict, queries: np.ndarray, truth: np.ndarray) -> dict:
    store = open_store(location)
    try:
        found = []
        for start in range(0, len(queries), 100):
            found += store.search(queries[start:start + 100], 10)
        single = []
        for q in queries[:200]:
            t0 = time.perf_counter()
            store.search(q[None, :], 10)
            single.append(time.perf_counter() - t0)
    finally:
        store.close()
    hits = [len({rows[n.id] for n in hits} & set(t.tolist())) for hits, t in zip(found, truth)]
    return {"recall_at_10": round(float(np.mean(hits)) / 10, 4), "search_in_process_ms": percentiles_ms(single)}


def worker_rss_mb(server: ServerProcess) -> list[float]:
    master = psutil.Process(server.proc.pid)
    return sorted(round(child.memory_info().rss / 2**20, 1) for child in master.children(recursive=True))


def http_figures(location: str, images: list[bytes], adds: int, log: str) -> dict:
    with ServerProcess(location, token=TOKEN, workers=2, threads=4, log_path=log) as server:
        with requests.Session() as http:
            for data in images[:20]:  # warm both workers
                http.post(f"{server.url}/api/search?k=10", data=data, headers={"Content-Type": "image/png"},
                          timeout=60).raise_for_status()
            searches = []
            for data in images:
                t0 = time.perf_counter()
                r = http.post(f"{server.url}/api/search?k=10", data=data, headers={"Content-Type": "image/png"},
                              timeout=60)
                searches.append(time.perf_counter() - t0)
                assert r.status_code == 200 and len(r.json()["neighbors"]) == 10, r.text
            auth = {"Authorization": f"Bearer {TOKEN}"}
            added, new_ids = [], []
            for i in range(adds):
                t0 = time.perf_counter()
                r = http.post(f"{server.url}/api/images", headers=auth, data={"label": "bench"}, timeout=60,
                              files={"image": ("a.png", unique_image(50_000 + i), "image/png")})
                added.append(time.perf_counter() - t0)
                assert r.status_code == 201, r.text
                new_ids.append(r.json()["id"])
            for item_id in new_ids:
                assert http.delete(f"{server.url}/api/images/{item_id}", headers=auth, timeout=60).ok
        rss = worker_rss_mb(server)
    return {"search_http_ms": percentiles_ms(searches), "add_http_ms": percentiles_ms(added), "worker_rss_mb": rss}


def run_backend(name: str, location: str, home: str, source: dict, config: IndexConfig, queries, truth,
                images, args, workdir: str, server_pid: int | None = None) -> dict:
    print(f"[backends] {name}: loading {len(source['ids'])} vectors into {location}", flush=True)
    rows, load_s = fill(location, source, config, home)
    result = {"location": location.split("://")[0], "load_s": round(load_s, 1)}
    result.update(recall(location, rows, queries, truth))
    print(f"[backends] {name}: recall {result['recall_at_10']}; HTTP", flush=True)
    result.update(http_figures(location, images, args.adds, os.path.join(workdir, f"{name}.log")))
    if server_pid:
        result["milvus_server_rss_mb"] = round(psutil.Process(server_pid).memory_info().rss / 2**20, 1)
    print(f"[backends] {name}: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=DEMO_INDEX)
    parser.add_argument("--type", default="hnsw", choices=("flat", "hnsw"))
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--adds", type=int, default=50)
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument("--standalone", action="store_true", help="also the real Milvus 2.3.5 server")
    parser.add_argument("--out", default="bench/results/backends.json")
    args = parser.parse_args()
    from bench.milvus_servers import MilvusLiteServer, milvus_standalone_server

    source = load_source(args.index)
    test = load_labelled_images(str(FASHION_MNIST_PNG_ROOT / "test"), min_per_class=1)
    pick = np.random.default_rng(0).permutation(len(test))
    embedder = load_checkpoint(os.path.join(source["home"], MODEL_FILE)).embedder()
    queries = embedder.embed_data(test.subset(np.sort(pick[:args.recall_queries])), progress=False).embeddings
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(queries @ source["xb"].T), axis=1)[:, :10]
    images = [open(test.paths[i], "rb").read() for i in pick[args.recall_queries:args.recall_queries + args.searches]]
    config = IndexConfig(index_type=args.type)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as workdir:
        embedded = os.path.join(workdir, "embedded")
        results["embedded"] = run_backend("embedded", embedded, embedded, source, config, queries, truth, images,
                                          args, workdir)
        with MilvusLiteServer(os.path.join(workdir, "lite-data"), log_path=os.path.join(workdir, "lite.log")) as lite:
            results["milvus_lite_server"] = run_backend(
                "milvus-lite", f"milvus://127.0.0.1:{lite.port}/bench", os.path.join(workdir, "lite-home"),
                source, config, queries, truth, images, args, workdir, server_pid=lite.pid)
        if args.standalone:  # the server's default time tick (200 ms), then the shorter one the README suggests
            for tick in (None, 20):
                extra = {"proxy.timeTickInterval": tick} if tick else None
                name = "milvus_2_3_5_standalone" + (f"_tick{tick}ms" if tick else "")
                with milvus_standalone_server(os.path.join(workdir, name), extra_config=extra) as server:
                    results[name] = run_backend(
                        name, f"milvus://127.0.0.1:{server.port}/bench", os.path.join(workdir, name + "-home"),
                        source, config, queries, truth, images, args, workdir, server_pid=server.pid)
    emit({"benchmark": "backends", "index": os.path.relpath(args.index), "items": len(source["ids"]),
          "index_type": args.type, "config": {"hnsw_m": config.hnsw_m, "ef_construction": config.ef_construction,
                                              "ef_search": config.ef_search},
          "recall_queries": len(queries), "http_searches": len(images), "adds": args.adds,
          "client": "python requests, one request at a time, keep-alive", "server": "gunicorn 2 workers x 4 threads",
          "results": results}, args.out)


if __name__ == "__main__":
    main()
