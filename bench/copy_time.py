"""What ``simsearch index copy`` costs: an embedded index of ``--n`` synthetic 128-d vectors copied into a
collection on the real Milvus 2.3.5 standalone server (the ``milvus`` PyPI package) on 127.0.0.1.

The source is built by ``bench.scale_worker build`` in its own process (Flat: the copy reads the truth, not the
view).  Then, in this process: ``engine.build.copy_index`` (streamed: one 10k chunk of vectors and metadata in
memory at a time) with the timing of the copy and the flush, this process's memory above its level before the
copy (VmHWM), then the time until Milvus has built the index of every sealed segment (``describe_index``'s
``indexed_rows``), and the server's resident memory.  A 10x figure is printed as an extrapolation, marked so.

    .venv/bin/python -m bench.copy_time --n 1000000 --out bench/results/copy_time_1m.json   # ~15-25 min
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.machine import emit
from bench.milvus_servers import milvus_standalone_server
from bench.scale import run_step, size_name
from bench.scale_worker import memory_mb
from index import IndexConfig
from index.location import open_store


def process_rss_mb(pid: int | None) -> float | None:
    """Resident memory of process ``pid`` and its children, in MB (None without a pid)."""
    import psutil

    if pid is None:
        return None
    proc = psutil.Process(pid)
    return round(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20, 1)


def wait_indexed(store, n: int, timeout_s: float) -> float | None:
    """Seconds until Milvus reports every row of the collection indexed (None past ``timeout_s``)."""
    started = time.perf_counter()
    client, collection = store._client, store._location.collection
    while time.perf_counter() - started < timeout_s:
        names = client.list_indexes(collection)
        info = client.describe_index(collection, names[0]) if names else {}
        if int(info.get("indexed_rows", 0)) >= n and int(info.get("pending_index_rows", 0)) == 0:
            return round(time.perf_counter() - started, 1)
        time.sleep(2)
    return None


def main(argv: list[str] | None = None) -> dict:
    from engine.build import copy_index
    from engine.layout import MODEL_FILE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--type", default="auto", help="the collection's index type (index copy --type)")
    parser.add_argument("--index-timeout", type=float, default=1800, help="seconds to wait for Milvus's index")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="copy_time.", dir=args.workdir)
    try:
        source = os.path.join(work, "source")
        data = {"kind": "synthetic", "n": args.n, "dim": args.dim, "centres": 2000, "noise": 0.08, "seed": 0}
        config = replace(IndexConfig(index_type="flat"), expected_size=args.n, auto_snapshot=False)
        built = run_step("build", {"data": data, "dir": source, "config": config.to_dict()}, work)
        Path(source, MODEL_FILE).write_bytes(b"\0" * 1024)  # copied beside the collection, never loaded
        with milvus_standalone_server(Path(work) / "milvus") as server:
            target = f"milvus://127.0.0.1:{server.port}/copy_{size_name(args.n)}"
            before = memory_mb()
            started = time.perf_counter()
            copied = copy_index(source, target, home=os.path.join(work, "home"), index_type=args.type)
            copy_s = time.perf_counter() - started
            after = memory_mb()
            store = open_store(target)
            try:
                indexed_s = wait_indexed(store, args.n, args.index_timeout)
                stats = store.stats()
            finally:
                store.close()
            server_mb = process_rss_mb(server.pid)
        result = {
            "name": "copy_time", "n": args.n, "dim": args.dim, "server": "milvus 2.3.5 standalone",
            "source_build_s": built["build_s"], "copied": copied["copied"],
            "index_type": stats.get("index_type"), "milvus_index": stats.get("factory"),
            "copy_and_flush_s": round(copy_s, 1), "items_per_s": round(args.n / copy_s),
            "client_peak_above_start_mb": round(after["vmhwm_mb"] - before["vmrss_mb"], 1),
            "milvus_index_built_after_copy_s": indexed_s, "milvus_server_rss_mb": server_mb,
            "extrapolated_10x": {"note": "extrapolation, not measured: linear in n",
                                 "n": args.n * 10, "copy_and_flush_s": round(copy_s * 10)},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
