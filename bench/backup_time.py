"""Figure: ``simsearch index backup`` / ``restore`` time and size.

Two index directories, each backed up and restored once:

1. ``fmnist_60k``: the Fashion-MNIST training set's size, 60,000 items of dim 128 with the real layout
   (``store.sqlite``, a FAISS snapshot, ``model.pt``, ``uploads/``), but **random vectors**, not embedded images
   (labelled ``"vectors": "random"``); item paths point at the dataset's PNG names (files outside the index are
   not part of a backup) and ``--uploads`` of them are real upload files (random PNG-sized bytes).  With
   ``--index DIR`` an existing index directory (e.g. runs/demo/index) is measured instead.
2. ``random_1m``: 1,000,000 random vectors of dim 128 added in batches to an ``IndexStore`` (flat, one snapshot).

    .venv/bin/python -m bench.backup_time --out bench/results/backup_time.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from bench import REPO
from bench.machine import emit
from engine.backup import backup_index, restore_index
from engine.layout import MODEL_FILE, UPLOADS_DIR
from index import IndexConfig, IndexStore

DIM = 128
BATCH = 50_000
MODEL_INFO = {"checkpoint_sha256": "bench-random-vectors", "embedding_dim": DIM, "metric": "ip", "preprocess": {}}
FMNIST_MODEL = os.path.join(REPO, "runs", "matrix", "fashion-mnist-native", MODEL_FILE)


def fill_index(directory: str, n: int, *, rng: np.random.Generator, uploads: int, model: str | None) -> dict:
    """A new index directory of ``n`` random unit vectors (the last ``uploads`` of them uploads) and a model
    file; returns how it was made."""
    config = IndexConfig(index_type="flat", auto_snapshot=False, expected_size=n)
    store = IndexStore.create(directory, DIM, config=config, model_info=MODEL_INFO)
    upload_dir = os.path.join(directory, UPLOADS_DIR)
    os.makedirs(upload_dir, exist_ok=True)
    started = time.perf_counter()
    try:
        for start in range(0, n, BATCH):
            count = min(BATCH, n - start)
            xb = rng.standard_normal((count, DIM), dtype=np.float32)
            xb /= np.linalg.norm(xb, axis=1, keepdims=True)
            paths = []
            for i in range(start, start + count):
                if i >= n - uploads:
                    path = os.path.join(upload_dir, f"{i:08x}.png")
                    with open(path, "wb") as handle:
                        handle.write(rng.bytes(800))  # about a 28x28 PNG
                    paths.append(path)
                else:
                    paths.append(f"/data/fashion-mnist/train/{i % 10}/{i:05d}.png")
            store.add(xb, labels=[str(i % 10) for i in range(start, start + count)], paths=paths)
        store.snapshot()
    finally:
        store.close()
    if model and os.path.isfile(model):
        shutil.copyfile(model, os.path.join(directory, MODEL_FILE))
        model_kind = "a Fashion-MNIST checkpoint"
    else:
        with open(os.path.join(directory, MODEL_FILE), "wb") as handle:
            handle.write(rng.bytes(14_000_000))
        model_kind = "14 MB of random bytes"
    return {"items": n, "dim": DIM, "vectors": "random", "index_type": "flat", "uploads": uploads,
            "model": model_kind, "fill_seconds": round(time.perf_counter() - started, 1)}


def folder_bytes(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _dirs, files in os.walk(directory)
               for name in files)


def measure(index: str, work: str) -> dict:
    """Back ``index`` up into ``work`` and restore it there; times, sizes and the manifest's counts."""
    backup, restored = os.path.join(work, "backup"), os.path.join(work, "restored")
    started = time.perf_counter()
    manifest = backup_index(index, backup)
    backup_s = time.perf_counter() - started
    started = time.perf_counter()
    restore_index(backup, restored)
    restore_s = time.perf_counter() - started
    result = {"index_mb": round(folder_bytes(index) / 1e6, 1), "backup_mb": round(folder_bytes(backup) / 1e6, 1),
              "backup_seconds": round(backup_s, 2), "restore_seconds": round(restore_s, 2),
              "backup_items": manifest.items, "backup_uploads": manifest.uploads, "log_head": manifest.log_head,
              "files": len(manifest.files)}
    shutil.rmtree(backup)
    shutil.rmtree(restored)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=None, help="measure this index directory instead of the 60k layout")
    parser.add_argument("--uploads", type=int, default=1000, help="upload files in the 60k index")
    parser.add_argument("--large", type=int, default=1_000_000, help="vectors in the large index (0: skip)")
    parser.add_argument("--work", default=None, help="folder for the indexes and backups (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    results = {}
    with tempfile.TemporaryDirectory(prefix="backup-time-", dir=args.work) as work:
        if args.index:
            made = {"index": os.path.abspath(args.index), "vectors": "embedded images"}
            index = args.index
        else:
            index = os.path.join(work, "fmnist-60k")
            made = fill_index(index, 60_000, rng=rng, uploads=args.uploads, model=FMNIST_MODEL)
        os.makedirs(os.path.join(work, "small"))
        results["fmnist_60k"] = {**made, **measure(index, os.path.join(work, "small"))}
        print(results["fmnist_60k"], flush=True)
        if args.large:
            index = os.path.join(work, "random-1m")
            made = fill_index(index, args.large, rng=rng, uploads=0, model=None)
            os.makedirs(os.path.join(work, "large"))
            results["random_1m"] = {**made, **measure(index, os.path.join(work, "large"))}
            print(results["random_1m"], flush=True)
    emit({"benchmark": "backup_time", "command": "python -m bench.backup_time", "results": results}, args.out)


if __name__ == "__main__":
    main()
