"""SQLite's log under a long run of single-item writes: how large the ``-wal`` file gets.

``--writes`` single-item writes (every fifth a delete, the others adds) into a Flat index of 128-d vectors,
with the default snapshot policy (a snapshot every 10,000 changes, which truncates the
log) and ``--readers`` threads searching without pause meanwhile, as API workers do (readers that never
pause keep SQLite from restarting its log).  The size of ``store.sqlite-wal`` is sampled every ``--every``
writes; its largest value after any write is reported too, against ``JOURNAL_SIZE_LIMIT_BYTES``.  The
database runs with ``--synchronous normal`` by default: when the log is fsynced changes nothing in its size,
and at ``full`` one fsync per write makes 100,000 writes take many minutes on a busy machine.

    .venv/bin/python -m bench.wal_soak --out bench/results/wal_soak.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import numpy as np

from bench.machine import emit
from index import IndexConfig, IndexStore
from index.db import JOURNAL_SIZE_LIMIT_BYTES, WAL_AUTOCHECKPOINT_PAGES, db_path

DIM = 128
MODEL = {"checkpoint_sha256": "ef" * 32, "embedding_dim": DIM, "metric": "cosine", "preprocess": {"size": 28}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=1_000)
    parser.add_argument("--readers", type=int, default=1)
    parser.add_argument("--synchronous", choices=("full", "normal"), default="normal")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((args.writes, DIM)).astype(np.float32)
    stop = threading.Event()
    searches = [0] * args.readers
    with tempfile.TemporaryDirectory() as work:
        store = IndexStore.create(os.path.join(work, "index"), DIM, config=IndexConfig(index_type="flat"),
                                  model_info=MODEL, synchronous=args.synchronous)
        wal = db_path(store.directory) + "-wal"

        def reader(slot: int) -> None:
            xq = rng.standard_normal((1, DIM)).astype(np.float32)
            while not stop.is_set():
                store.search(xq, 10)
                searches[slot] += 1

        threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(args.readers)]
        samples, largest, ids = [], 0, []
        started = time.perf_counter()
        try:
            for thread in threads:
                thread.start()
            for i in range(args.writes):
                if i % 5 == 4 and ids:
                    store.remove([ids.pop(int(rng.integers(len(ids))))])
                else:
                    ids.append(int(store.add(xb[i:i + 1], labels=[f"c{i % 10}"], paths=[f"w/{i}.png"])[0]))
                size = os.path.getsize(wal) if os.path.exists(wal) else 0
                largest = max(largest, size)
                if (i + 1) % args.every == 0:
                    samples.append(size)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            stats = store.stats()
            store.wait_for_background()
            db_bytes = os.path.getsize(db_path(store.directory))
            store.close()
    result = {"writes": args.writes, "readers": args.readers, "searches": sum(searches), "dim": DIM,
              "synchronous": args.synchronous, "snapshot_every": IndexConfig().snapshot_every,
              "journal_size_limit_bytes": JOURNAL_SIZE_LIMIT_BYTES, "wal_autocheckpoint_pages": WAL_AUTOCHECKPOINT_PAGES,
              "wal_bytes_sampled_every": args.every, "wal_bytes_samples": samples,
              "wal_bytes_max_sampled": max(samples) if samples else 0, "wal_bytes_max_after_any_write": largest,
              "under_limit": largest <= JOURNAL_SIZE_LIMIT_BYTES, "items_at_end": stats["ntotal"],
              "snapshots_written": stats["snapshot"]["gen"] if stats["snapshot"] else 0,
              "database_bytes_at_end": db_bytes, "seconds": round(seconds, 1),
              "writes_per_s": round(args.writes / seconds, 1)}
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
