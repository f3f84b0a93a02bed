"""One-time migration of an index directory from simsearch 0.1's layout (``manifest.json`` naming a
generation's ``index.<g>.faiss`` and ``meta.<g>.sqlite``) to the SQLite-truth layout of :mod:`index.store`.

Ids, labels, paths, sources and times added are kept; the vectors come out of the old FAISS file (flat and
HNSW keep them; an old IVF-PQ index holds only compressed codes, so it cannot be migrated and has to be
rebuilt from its images).  The new database is written aside and renamed into place (the commit point);
the old files are removed only after that, so a crash at any moment leaves an index that opens.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3

import faiss
import numpy as np

from durablefile import atomic_path, fsync_dir
from index import factory
from index.config import IndexConfig
from index.db import DB_FILE, FORMAT, FORMAT_VERSION, StoreDB, db_path
from index.errors import IndexStoreError
from index.keeper import SNAPSHOT_DIR
from index.store import LEGACY_MANIFEST, IndexStore

logger = logging.getLogger(__name__)


def migrate_legacy(directory: str | os.PathLike) -> dict:
    """Migrate ``directory`` in place; returns ``{"items", "tombstones_dropped", "index_type"}``.
    Raises ``IndexStoreError`` when it is not an old-layout index or cannot be migrated."""
    directory = os.fspath(directory)
    manifest_path = os.path.join(directory, LEGACY_MANIFEST)
    if os.path.isfile(db_path(directory)):
        _remove_legacy_files(directory)
        raise IndexStoreError(f"{directory} is already in the current layout; nothing to migrate")
    try:
        with open(manifest_path) as handle:
            manifest = json.load(handle)
        files = manifest["files"]
        config = IndexConfig.from_dict(manifest["config"])
        dim = int(manifest["dim"])
    except FileNotFoundError:
        raise IndexStoreError(f"{directory} has no {LEGACY_MANIFEST}: not an index of the old layout") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexStoreError(f"{manifest_path} is unreadable: {exc}") from None
    ids = np.zeros(0, dtype=np.int64)
    xb = np.zeros((0, dim), dtype=np.float32)
    if files.get("index"):
        index = faiss.read_index(os.path.join(directory, files["index"]))
        if not isinstance(index, faiss.IndexIDMap2):
            raise IndexStoreError(f"{directory} holds an IVF-PQ index, which keeps no vectors to migrate; "
                                  "rebuild it with: simsearch index build --checkpoint DIR/model.pt --data IMAGES")
        ids, xb = factory.stored_ids(index), factory.stored_vectors(index)
    rows, next_id, dead = _legacy_rows(os.path.join(directory, files["metadata"]))
    vector_of = dict(zip(ids.tolist(), range(len(ids))))
    missing = [r[0] for r in rows if r[0] not in vector_of]
    if missing:
        raise IndexStoreError(f"{directory}: {len(missing)} items have no vector in the old index (e.g. id "
                              f"{missing[0]}); rebuild it from its images")
    settings = {"format": FORMAT, "format_version": FORMAT_VERSION, "dim": dim, "model": manifest["model"],
                "config": config.to_dict(), "index_type": manifest.get("index_type"),
                "factory": manifest.get("factory"), "created_at": manifest.get("created_at"),
                "next_id": int(next_id), "log_floor": 0}
    os.makedirs(os.path.join(directory, SNAPSHOT_DIR), exist_ok=True)
    with atomic_path(os.path.join(directory, DB_FILE)) as tmp:
        db = StoreDB.create(tmp, settings)
        try:
            with db.transaction() as conn:
                conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
                                 ((i, xb[vector_of[i]].tobytes(), label, path, added_at, source)
                                  for i, path, label, added_at, source in rows))
                conn.executemany("INSERT INTO changes (op, item_id, at) VALUES ('add', ?, ?)",
                                 ((r[0], r[3]) for r in rows))
        finally:
            db.close()
    _remove_legacy_files(directory)
    store = IndexStore.open(directory)  # builds the view from the truth; write it as the first snapshot
    try:
        store.compact()
        summary = {"items": len(store), "tombstones_dropped": len(dead), "index_type": store.index_type}
    finally:
        store.close()
    logger.info("migrated %s: %s", directory, summary)
    return summary


def _legacy_rows(path: str) -> tuple[list[tuple], int, list[int]]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT id, path, label, added_at, source FROM items ORDER BY id").fetchall()
            next_id = conn.execute("SELECT value FROM counters WHERE name = 'next_id'").fetchone()[0]
            dead = [r[0] for r in conn.execute("SELECT id FROM tombstones")]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise IndexStoreError(f"old metadata database {path} is unreadable: {exc}") from None
    return rows, next_id, dead


def _remove_legacy_files(directory: str) -> None:
    """Remove the old layout's files (the manifest last: until then the old index still reads as one)."""
    names = sorted(os.listdir(directory))
    legacy = [n for n in names if (n.startswith(("index.", "meta.")) and n.split(".")[-1] in ("faiss", "sqlite", "tmp"))
              or n in (".write.lock", LEGACY_MANIFEST + ".tmp")]
    for name in legacy + ([LEGACY_MANIFEST] if LEGACY_MANIFEST in names else []):
        os.remove(os.path.join(directory, name))
    fsync_dir(directory)
