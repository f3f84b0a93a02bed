"""Disk space: SQLite's log (``-wal``) stays bounded under a long run of writes, a snapshot truncates it, and
compaction gives the pages of deleted rows back to the file system."""

from __future__ import annotations

import os
import sqlite3
import threading

import numpy as np
import pytest

from index import IndexStore
from index import db as index_db
from index.db import db_path
from tests.index.conftest import DIM, manual, model_info, vectors

LIMIT = 256 * 1024  # bytes: journal_size_limit for these tests (64 MiB in production)


@pytest.fixture
def small_wal(monkeypatch):
    """Every new connection checkpoints after 32 pages (128 KiB) and cuts the log back to ``LIMIT``."""
    monkeypatch.setattr(index_db, "JOURNAL_SIZE_LIMIT_BYTES", LIMIT)
    monkeypatch.setattr(index_db, "WAL_AUTOCHECKPOINT_PAGES", 32)


def wal_bytes(store: IndexStore) -> int:
    path = db_path(store.directory) + "-wal"
    return os.path.getsize(path) if os.path.exists(path) else 0


def test_the_wal_stays_under_its_limit_through_a_soak_of_writes(tmp_path, small_wal):
    """5,000 single-item writes (adds and deletes) with a reader searching without pause, after one batch
    four times the limit.  A reader that never pauses keeps SQLite from restarting the log (measured here
    without the bound: 0.6 to 2.3 MB, and the batch's 1 MB kept for ever), so the writer whose commit finds
    it past the limit truncates it.  A truncation that finds the readers busy for 0.25 s is tried again once
    the log has grown by another half of the limit.  (No snapshot here: a snapshot prunes the log in one
    transaction larger than this tiny limit; that it truncates the log is tested below.)"""
    store = IndexStore.create(tmp_path / "soak", DIM, config=manual("flat"), model_info=model_info(),
                              synchronous="normal")
    stop = threading.Event()

    def reader() -> None:
        xq = vectors(4, seed=7)
        while not stop.is_set():
            store.search(xq, 5)

    try:
        ids = store.add(vectors(3000), labels=["batch"] * 3000, paths=["p"] * 3000)  # ~1 MB of log
        assert wal_bytes(store) <= LIMIT
        thread = threading.Thread(target=reader)
        thread.start()
        sizes = []
        rng = np.random.default_rng(0)
        xb = vectors(5000, seed=3)
        for i in range(5000):
            if i % 5 == 4:
                store.remove([int(ids[rng.integers(len(ids))])])
            else:
                store.add(xb[i:i + 1], labels=[f"c{i % 7}"], paths=[f"s/{i}.png"])
            sizes.append(wal_bytes(store))
        stop.set()
        thread.join()
        store.wait_for_background()
        assert max(sizes) <= LIMIT * 3 // 2, f"the log reached {max(sizes)} bytes"
    finally:
        stop.set()
        store.close()


def test_a_snapshot_truncates_the_wal(tmp_path):
    store = IndexStore.create(tmp_path / "truncate", DIM, config=manual("flat"), model_info=model_info())
    try:
        store.add(vectors(2000), labels=["a"] * 2000, paths=["p"] * 2000)
        assert wal_bytes(store) > 0
        store.snapshot()
        assert wal_bytes(store) == 0
    finally:
        store.close()


def test_compaction_gives_the_space_of_deleted_items_back(tmp_path):
    """A new database uses auto_vacuum=INCREMENTAL: compaction after a mass delete shrinks the file."""
    store = IndexStore.create(tmp_path / "vacuum", DIM, config=manual("flat"), model_info=model_info())
    try:
        ids = store.add(vectors(6000), labels=["a"] * 6000, paths=["p" * 200] * 6000)
        store.compact()
        full = os.path.getsize(db_path(store.directory))
        store.remove(ids[:5000])
        result = store.compact()
        assert result.rebuilt and result.reclaimed_bytes > 0
        assert os.path.getsize(db_path(store.directory)) < full / 2 and wal_bytes(store) == 0
        assert len(store) == 1000 and store.label_counts() == {"a": 1000}
    finally:
        store.close()


def test_a_forced_compaction_rewrites_an_older_database_for_incremental_vacuum(tmp_path):
    """A database made before format 4 has no auto_vacuum: its free pages stay in the file until
    ``compact --force`` rewrites it (VACUUM) with auto_vacuum=INCREMENTAL."""
    directory = tmp_path / "old"
    store = IndexStore.create(directory, DIM, config=manual("flat"), model_info=model_info())
    ids = store.add(vectors(6000), labels=["a"] * 6000, paths=["p" * 200] * 6000)
    store.close()
    with sqlite3.connect(db_path(str(directory)), isolation_level=None) as conn:
        conn.execute("PRAGMA auto_vacuum=NONE")
        conn.execute("VACUUM")
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()
    store = IndexStore.open(directory)
    try:
        store.remove(ids[:5000])
        full = os.path.getsize(db_path(str(directory)))
        assert store.compact().reclaimed_bytes == 0  # free pages, kept in the file for later rows
        assert store.compact(force=True).reclaimed_bytes > full / 2
        with sqlite3.connect(db_path(str(directory))) as conn:
            assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL from now on
        conn.close()
        assert len(store) == 1000 and store.label_counts() == {"a": 1000}
    finally:
        store.close()
