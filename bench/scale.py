"""Scale benchmark of the index layouts through the real store: recall, latency, memory, build and compaction.

For each layout (Flat up to 1M vectors, HNSW, the compressed ``ivfpq`` with and without exact re-ranking, and
hnswlib as an outside reference) the collection is built through ``IndexStore.create`` + ``add`` in chunks +
``snapshot`` in a child process, then served by another (``IndexStore.open``, one query at a time through
``IndexStore.search``), then compacted by a third (``bench/scale_worker.py``), so each step's memory is its
own (VmRSS steady, VmHWM peak).  Recall@10 is against exact search, computed in chunks with faiss.

Data: the clustered synthetic 128-d vectors of ``bench.index_ann`` (drawn in seeded chunks: no step holds the
whole collection but the index itself); ``--real INDEX`` also measures the real embeddings of an index (the
60k Fashion-MNIST demo: ``runs/demo/index``), 1000 of them held out as queries.  ``--table`` writes the
recall@10 / p50 rows into ``index/recall_table.json``, which ``--type auto`` reads.

The outside reference needs ``pip install hnswlib==0.8.0`` (built from source; its row is skipped without it).

    .venv/bin/python -m bench.scale --n 100000 --real runs/demo/index --table   # ~6 min on 2 cores
    .venv/bin/python -m bench.scale --n 1000000 --table                          # ~30 min, ~2 GB peak
    .venv/bin/python -m bench.scale --n 10000000 --rows ivfpq,hnswlib --table    # ~1.5-2 h, hnswlib ~10-14 GB
    .venv/bin/python -m bench.scale --n 10000000 --rows hnsw --no-compaction \
        --out bench/results/scale_10m_hnsw.json --table                          # ~1.5 h, ~9 GB
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace

import faiss
import numpy as np
from tqdm import tqdm

from bench.index_ann import MIXTURE_BLOCK, mixture_chunks, mixture_queries, recall_at
from bench.machine import emit, machine_info
from index import IndexConfig, IndexStore, recall_table
from index.config import setting_params

log = logging.getLogger("bench.scale")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ("flat", "hnsw", "ivfpq", "hnswlib")
HNSW_EF = (32, 64, 128)
IVF_NPROBE = (8, 16, 32)
RERANK = (0, 50, 100, 200, 400)
SEARCH_KEYS = ("ef_search", "nprobe", "rerank")  # IndexStore.search's per-call settings


def size_name(n: int) -> str:
    """``100000`` -> ``"100k"``, ``1000000`` -> ``"1m"``."""
    for unit, name in ((10**6, "m"), (10**3, "k")):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{name}"
    return str(n)


def ground_truth(data: dict, xq: np.ndarray, k: int, xb: np.ndarray | None = None) -> np.ndarray:
    """``(nq, k) int64`` exact inner-product neighbours of ``xq`` among the collection (ids = positions),
    searched chunk by chunk and merged in a faiss ``ResultHeap``."""
    heap = faiss.ResultHeap(len(xq), k, keep_max=True)
    blocks = (xb[s:s + MIXTURE_BLOCK] for s in range(0, len(xb), MIXTURE_BLOCK)) if xb is not None else \
        mixture_chunks(data["n"], data["dim"], data["centres"], data["noise"], data["seed"])
    offset = 0
    for block in tqdm(blocks, total=-(-data["n"] // MIXTURE_BLOCK), desc="exact ground truth", file=sys.stderr):
        flat = faiss.IndexFlatIP(block.shape[1])
        flat.add(block)
        D, I = flat.search(xq, k)
        heap.add_result(D, I + offset)
        offset += len(block)
    heap.finalize()
    return heap.I


def run_step(step: str, spec: dict, workdir: str) -> dict:
    """Run one ``bench.scale_worker`` step in a child process; its last stdout line is the JSON result."""
    path = os.path.join(workdir, f"{step}.json")
    with open(path, "w") as handle:
        json.dump(spec, handle)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "bench.scale_worker", step, path], stdout=subprocess.PIPE,
                          text=True, env=env, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def layout_settings(kind: str) -> list[dict]:
    """The search-time settings swept for a layout (keyword arguments of ``IndexStore.search``)."""
    if kind == "hnsw":
        return [{"ef_search": ef} for ef in HNSW_EF]
    if kind == "ivfpq":
        return [{"nprobe": p, "rerank": r} for p in IVF_NPROBE for r in RERANK]
    return [{}]


def measure_layout(kind: str, data: dict, queries: str, gt: np.ndarray, config: IndexConfig, workdir: str,
                   compaction: bool) -> dict:
    """Build, serve (and compact) one layout; returns its row with a recall@10 per swept setting."""
    directory = os.path.join(workdir, kind)
    out = os.path.join(workdir, f"{kind}_ids.npz")
    cfg = replace(config, index_type=kind, expected_size=data["n"], auto_snapshot=False)
    built = run_step("build", {"data": data, "dir": directory, "config": cfg.to_dict()}, workdir)
    served = run_step("serve", {"dir": directory, "queries": queries, "out": out,
                                "settings": layout_settings(kind)}, workdir)
    ids = np.load(out)
    for i, setting in enumerate(served["settings"]):
        setting["recall_at_10"] = round(recall_at(ids[f"s{i}"], gt, 10), 4)
    row = {"layout": kind, **built, **served}
    if compaction:
        row.update(run_step("compact", {"dir": directory}, workdir))
    shutil.rmtree(directory, ignore_errors=True)
    log.info("%s: %s", kind, json.dumps({k: v for k, v in row.items() if k != "settings"}))
    return row


def measure_hnswlib(data: dict, queries: str, gt: np.ndarray, config: IndexConfig, workdir: str) -> dict:
    try:
        import hnswlib  # noqa: F401
    except ImportError:
        return {"layout": "hnswlib", "skipped": "hnswlib is not installed (pip install hnswlib==0.8.0)"}
    out = os.path.join(workdir, "hnswlib_ids.npz")
    row = run_step("hnswlib", {"data": data, "queries": queries, "out": out, "m": config.hnsw_m,
                               "ef_construction": config.ef_construction, "ef_search": list(HNSW_EF)}, workdir)
    ids = np.load(out)
    for i, setting in enumerate(row["settings"]):
        setting["recall_at_10"] = round(recall_at(ids[f"s{i}"], gt, 10), 4)
    return {"layout": "hnswlib", **row}


def table_rows(rows: list[dict], data_name: str, n: int, dim: int, config: IndexConfig, machine: str) -> list[dict]:
    """The recall-table rows of the measured store layouts (one per layout and swept setting)."""
    out = []
    for row in rows:
        kind = row["layout"]
        if kind not in ("flat", "hnsw", "ivfpq") or "settings" not in row:
            continue
        for setting in row["settings"]:
            cfg = replace(config, **{k: v for k, v in setting.items() if k in SEARCH_KEYS})
            out.append({"data": data_name, "n": n, "index_type": kind, "params": setting_params(kind, dim, cfg),
                        "recall_at_10": setting["recall_at_10"], "p50_ms": setting["p50_ms"],
                        "bytes_per_vector": row["bytes_per_vector"], "machine": machine})
    return out


def real_collection(index_dir: str, nq: int, seed: int, workdir: str) -> tuple[dict, np.ndarray]:
    """The vectors of an existing index (e.g. the 60k Fashion-MNIST demo), ``nq`` of them held out as queries;
    the rest saved as a ``.npy`` the child processes read."""
    store = IndexStore.open(index_dir)
    try:
        _, x = store.all_vectors()
    finally:
        store.close()
    perm = np.random.default_rng(seed).permutation(len(x))
    xq, xb = np.ascontiguousarray(x[perm[:nq]]), np.ascontiguousarray(x[perm[nq:]])
    path = os.path.join(workdir, "real_base.npy")
    np.save(path, xb)
    return {"kind": "npy", "path": path, "n": len(xb), "dim": xb.shape[1], "source": os.path.abspath(index_dir)}, xq


def measure(data: dict, xq: np.ndarray, gt: np.ndarray, layouts: list[str], config: IndexConfig, workdir: str,
            compaction: bool) -> list[dict]:
    queries = os.path.join(workdir, "queries.npy")
    np.save(queries, xq)
    rows = []
    for kind in layouts:
        if kind == "hnswlib":
            rows.append(measure_hnswlib(data, queries, gt, config, workdir))
        else:
            rows.append(measure_layout(kind, data, queries, gt, config, workdir, compaction))
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True, help="synthetic database vectors")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--centres", type=int, default=2000)
    ap.add_argument("--noise", type=float, default=0.08)
    ap.add_argument("--queries", type=int, default=1000, help="single queries per setting (also the recall set)")
    ap.add_argument("--rows", default=None, help=f"comma-separated, of {','.join(ROWS)} (default: all; no flat "
                                                 "past 1M)")
    ap.add_argument("--real", metavar="INDEX", help="also measure the embeddings of this index (e.g. runs/demo/index)")
    ap.add_argument("--real-name", default="fashion-mnist-60k", help="the real data's name in the recall table")
    ap.add_argument("--no-compaction", action="store_true", help="skip the compaction step")
    ap.add_argument("--table", action="store_true", help="write the rows into index/recall_table.json")
    ap.add_argument("--workdir", default=None, help="where the indexes are built (default: a temporary folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="default bench/results/scale_<n>.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    faiss.omp_set_num_threads(2)
    layouts = args.rows.split(",") if args.rows else [r for r in ROWS if r != "flat" or args.n <= 10**6]
    unknown = set(layouts) - set(ROWS)
    if unknown:
        ap.error(f"unknown rows {sorted(unknown)}; choose from {ROWS}")
    config = IndexConfig()
    machine = machine_info()
    machine_name = f"{machine['cpu']}, {machine['cores']} cores"
    workdir = tempfile.mkdtemp(prefix="scale.", dir=args.workdir)
    try:
        data = {"kind": "synthetic", "n": args.n, "dim": args.dim, "centres": args.centres, "noise": args.noise,
                "seed": args.seed}
        xq = mixture_queries(args.queries, args.dim, args.centres, args.noise, args.seed)
        gt = ground_truth(data, xq, 10)
        rows = measure(data, xq, gt, layouts, config, workdir, not args.no_compaction)
        table = table_rows(rows, f"synthetic-{args.dim}d", args.n, args.dim, config, machine_name)
        result = {"name": "scale", "data": {**data, "queries": args.queries, "k": 10}, "rows": rows}
        if args.real:
            real, xq_real = real_collection(args.real, args.queries, args.seed, workdir)
            gt_real = ground_truth(real, xq_real, 10, xb=np.load(real["path"]))
            real_rows = measure(real, xq_real, gt_real, [r for r in layouts if r != "hnswlib"], config, workdir,
                                compaction=False)
            table += table_rows(real_rows, args.real_name, real["n"], real["dim"], config, machine_name)
            result["real"] = {"data": {k: v for k, v in real.items() if k != "path"}, "rows": real_rows}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["recall_table_rows"] = table
    if args.table:
        write_table(table, machine)
    emit(result, args.out or os.path.join(REPO, "bench", "results", f"scale_{size_name(args.n)}.json"))
    return result


def write_table(rows: list[dict], machine: dict) -> None:
    """Merge ``rows`` into the shipped recall table (``index/recall_table.json``)."""
    path = recall_table.TABLE_FILE
    try:
        with open(path) as handle:
            table = json.load(handle)
    except FileNotFoundError:
        table = {"written_by": "python -m bench.scale --n N --table", "k": 10,
                 "note": "recall@10 against exact search, p50 of one query through IndexStore.search on the "
                         "machine named in each row; read by index.config.choose_index_type"}
    table = recall_table.merge(table, rows)
    table["machines"] = sorted({r["machine"] for r in table["rows"]})
    with open(path, "w") as handle:
        json.dump(table, handle, indent=1)
        handle.write("\n")
    recall_table.load.cache_clear()
    log.info("wrote %d rows into %s", len(rows), path)


if __name__ == "__main__":
    main()
