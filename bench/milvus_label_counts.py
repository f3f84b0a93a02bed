"""``label_counts`` on Milvus: one ``count(*)`` per recorded label (``index/milvus/labels.py``) against one pass
that streams every item's label to the client (what it did before, kept as ``scan_label_counts``).

A ``milvus-lite server`` (or, with ``--server standalone``, the Milvus 2.3.5 standalone server of the
``milvus`` package) on 127.0.0.1 with one HNSW collection of ``--items`` synthetic 128-d vectors in
``--labels`` classes (Fashion-MNIST's shape: 60,000 items, 10 labels), flushed; each way timed ``--repeats``
times, plus the first call on a collection whose label property is missing (made before it existed).

    .venv/bin/python -m bench.milvus_label_counts --out bench/results/milvus_label_counts.json
    .venv/bin/python -m bench.milvus_label_counts --server standalone --out bench/results/milvus_label_counts_2_3_5.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import emit
from bench.milvus_servers import milvus_lite_server, milvus_standalone_server
from bench.write_latency import percentiles_ms
from index import IndexConfig
from index.location import create_store
from index.milvus.labels import LABELS_PROPERTY

DIM = 128
MODEL = {"checkpoint_sha256": "cd" * 32, "embedding_dim": DIM, "metric": "ip", "preprocess": {"size": 28}}


def timed(fn, repeats: int) -> tuple[dict, object]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return percentiles_ms(seconds), result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=60_000)
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--server", choices=("lite", "standalone"), default="lite")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    start = milvus_lite_server if args.server == "lite" else milvus_standalone_server
    with tempfile.TemporaryDirectory() as work, start(Path(work) / "milvus") as server:
        store = create_store(f"milvus://127.0.0.1:{server.port}/label_counts", DIM,
                             config=IndexConfig(index_type="hnsw"), model_info=MODEL, home=str(Path(work) / "home"))
        try:
            labels = [f"class {i % args.labels}" for i in range(args.items)]
            started = time.perf_counter()
            store.add(rng.standard_normal((args.items, DIM)).astype(np.float32), labels=labels,
                      paths=[f"/img/{i}.png" for i in range(args.items)])
            store.flush()
            load_s = time.perf_counter() - started
            scan, scanned = timed(store.scan_label_counts, args.repeats)
            per_label, counted = timed(store.label_counts, args.repeats)
            assert scanned == counted and sum(counted.values()) == args.items, (scanned, counted)
            store._client.alter_collection_properties(store._location.collection, properties={LABELS_PROPERTY: ""})
            first, found = timed(store.label_counts, 1)  # every label found by the unrecorded-label query
            assert found == counted
        finally:
            store.close()
    result = {"items": args.items, "labels": args.labels, "dim": DIM, "milvus_index": "HNSW", "server": "milvus-lite" if args.server == "lite" else "milvus 2.3.5 standalone",
              "load_and_flush_s": round(load_s, 1),
              "scan_every_label_ms": scan, "count_per_label_ms": per_label,
              "count_per_label_without_the_property_ms": first,
              "speedup_p50": round(scan["p50"] / per_label["p50"], 1)}
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
