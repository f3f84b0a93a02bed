"""Fingerprints of an index, to prove that a refused request changed nothing.

Files are hashed byte for byte, except the SQLite database: a reader legitimately touches its ``-shm``
index and may fold the ``-wal`` into the main file, so the database is fingerprinted by its content
(every row of every table) instead.  A Milvus collection is fingerprinted by its items (ids, labels, paths,
sources, vectors) read through the store, and the files of its home folder like a directory's."""

from __future__ import annotations

import hashlib
import os
import sqlite3

from index.db import DB_FILE

# created empty by whoever first takes the snapshot lock; holds no data
IGNORED_NAMES = frozenset({".lock"})
DB_FILES = frozenset({DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm"})


def fingerprint(directory: str) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``directory`` (sub-folders included); the database
    appears once, as ``store.sqlite (rows)``.  For a Milvus location: its items, and its home's files."""
    from index.location import is_milvus

    if is_milvus(directory):
        return _milvus_fingerprint(directory)
    result: dict[str, str] = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if name in IGNORED_NAMES or rel in DB_FILES:
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            result[rel] = digest.hexdigest()
    if os.path.isfile(os.path.join(directory, DB_FILE)):
        result[DB_FILE + " (rows)"] = database_digest(os.path.join(directory, DB_FILE))
    return result


def _milvus_fingerprint(location: str) -> dict[str, str]:
    from index.location import open_store

    store = open_store(location)
    try:
        ids, vectors = store.all_vectors()
        metas = store.get_many(ids)
        home = store.home
    finally:
        store.close()
    digest = hashlib.sha256(vectors.tobytes())
    for item_id in ids.tolist():
        meta = metas[item_id]
        digest.update(repr((item_id, meta.label, meta.path, meta.source)).encode())
    result = fingerprint(home) if os.path.isdir(home) else {}
    result["collection (items)"] = f"{len(ids)}:{digest.hexdigest()}"
    return result


def database_digest(path: str) -> str:
    """sha256 over every row of every table, in a stable order (read in one read transaction)."""
    digest = hashlib.sha256()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("BEGIN")
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            digest.update(table.encode())
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1'):
                digest.update(repr(row).encode())
        conn.execute("COMMIT")
    finally:
        conn.close()
    return digest.hexdigest()


def differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Human-readable list of files added, removed or changed between two fingerprints."""
    changes = [f"added {p}" for p in sorted(after.keys() - before.keys())]
    changes += [f"removed {p}" for p in sorted(before.keys() - after.keys())]
    changes += [f"changed {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return changes
