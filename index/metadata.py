"""Item metadata (id -> path, label, added_at, source), the id counter and HNSW tombstones, in SQLite.

The live database is an in-memory SQLite copy, loaded from and saved to a generation file with SQLite's
backup API; the file therefore always matches the faiss index saved beside it (see ``index.persist``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from index.errors import IndexStoreError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    label TEXT NOT NULL,
    added_at REAL NOT NULL,
    source TEXT
);
CREATE INDEX items_label ON items(label);
CREATE TABLE tombstones (id INTEGER PRIMARY KEY);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES ('next_id', 0);
"""
_CHUNK = 900  # stays under SQLite's bound-parameter limit


@dataclass(frozen=True)
class ItemMeta:
    """What the store knows about one indexed item; ``added_at`` is a Unix time in seconds."""

    id: int
    path: str
    label: str
    added_at: float
    source: str | None = None


class MetadataDB:
    """Thread-safe wrapper of one in-memory SQLite database (every call holds an internal mutex)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._mutex = threading.Lock()

    @classmethod
    def create(cls) -> "MetadataDB":
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
        return cls(conn)

    @classmethod
    def load(cls, path: str) -> "MetadataDB":
        """Copy the SQLite file at ``path`` into memory; raise ``IndexStoreError`` if it is unreadable."""
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                src.backup(conn)
            finally:
                src.close()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("SELECT id, path, label, added_at, source FROM items LIMIT 1").fetchall()
            conn.execute("SELECT value FROM counters WHERE name = 'next_id'").fetchone()[0]
        except (sqlite3.Error, TypeError) as exc:
            conn.close()
            raise IndexStoreError(f"metadata database {path} is missing or corrupt: {exc}") from None
        if version != SCHEMA_VERSION:
            conn.close()
            raise IndexStoreError(f"metadata database {path} has schema version {version}, expected {SCHEMA_VERSION}")
        return cls(conn)

    def save(self, path: str) -> None:
        """Write the whole database to a new file ``path`` (the caller fsyncs and renames it)."""
        with self._mutex:
            dst = sqlite3.connect(path)
            try:
                self._conn.backup(dst)
            finally:
                dst.close()

    def close(self) -> None:
        with self._mutex:
            self._conn.close()

    def allocate_ids(self, n: int) -> np.ndarray:
        """Reserve ``n`` new ids from the persisted counter: ``(n,) int64``, never reused."""
        with self._mutex, self._conn:
            start = self._conn.execute("SELECT value FROM counters WHERE name = 'next_id'").fetchone()[0]
            self._conn.execute("UPDATE counters SET value = ? WHERE name = 'next_id'", (start + n,))
        return np.arange(start, start + n, dtype=np.int64)

    def next_id(self) -> int:
        with self._mutex:
            return self._conn.execute("SELECT value FROM counters WHERE name = 'next_id'").fetchone()[0]

    def insert(self, ids: np.ndarray, paths: Sequence[str], labels: Sequence[str],
               sources: Sequence[str | None]) -> None:
        now = time.time()
        rows = [(int(i), str(p), str(lab), now, None if s is None else str(s))
                for i, p, lab, s in zip(ids, paths, labels, sources, strict=True)]
        with self._mutex, self._conn:
            self._conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", rows)

    def delete(self, ids: Sequence[int], *, tombstone: bool) -> np.ndarray:
        """Delete the rows of ``ids`` that exist; with ``tombstone`` also record them. Returns the deleted ids."""
        with self._mutex, self._conn:
            present = self._existing(ids)
            for start in range(0, len(present), _CHUNK):
                chunk = [(int(i),) for i in present[start:start + _CHUNK]]
                self._conn.executemany("DELETE FROM items WHERE id = ?", chunk)
                if tombstone:
                    self._conn.executemany("INSERT OR IGNORE INTO tombstones VALUES (?)", chunk)
        return present

    def _existing(self, ids: Sequence[int]) -> np.ndarray:
        found: list[int] = []
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found.extend(r[0] for r in self._conn.execute(f"SELECT id FROM items WHERE id IN ({marks})", chunk))
        return np.array(sorted(set(found)), dtype=np.int64)

    def tombstones(self) -> np.ndarray:
        with self._mutex:
            rows = self._conn.execute("SELECT id FROM tombstones ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def clear_tombstones(self) -> None:
        with self._mutex, self._conn:
            self._conn.execute("DELETE FROM tombstones")

    def get_many(self, ids: Sequence[int]) -> dict[int, ItemMeta]:
        """Metadata of the ids that exist, keyed by id."""
        out: dict[int, ItemMeta] = {}
        ids = sorted({int(i) for i in ids})
        with self._mutex:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in self._conn.execute(
                        f"SELECT id, path, label, added_at, source FROM items WHERE id IN ({marks})", chunk):
                    out[row[0]] = ItemMeta(*row)
        return out

    def count(self) -> int:
        with self._mutex:
            return self._conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def label_counts(self) -> dict[str, int]:
        with self._mutex:
            rows = self._conn.execute("SELECT label, COUNT(*) FROM items GROUP BY label ORDER BY label").fetchall()
        return {label: n for label, n in rows}

    def all_ids(self) -> np.ndarray:
        with self._mutex:
            rows = self._conn.execute("SELECT id FROM items ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def iter_items(self, batch: int = 10_000) -> Iterator[ItemMeta]:
        """All items in id order, fetched ``batch`` rows at a time."""
        last = -1
        while True:
            with self._mutex:
                rows = self._conn.execute(
                    "SELECT id, path, label, added_at, source FROM items WHERE id > ? ORDER BY id LIMIT ?",
                    (last, batch)).fetchall()
            if not rows:
                return
            for row in rows:
                yield ItemMeta(*row)
            last = rows[-1][0]
