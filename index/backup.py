"""A consistent copy of an index directory's store, taken while other processes write to it.

The database is copied with SQLite's online backup API in one step, which is one read transaction: the copy
is the committed state at one log position (``head``), whatever writers commit meanwhile.  The FAISS snapshot
files are copied next, those that the *copy* names (the live database may have moved on).  A snapshot file
never changes once named; only the pruning after a newer snapshot removes one, so when a named file is gone
before it was copied, the whole copy is taken again.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from index.db import DB_FILE, StoreDB, db_path
from index.errors import IndexStoreError
from index.keeper import SNAPSHOT_DIR

logger = logging.getLogger(__name__)

ATTEMPTS = 3  # copies taken when a named snapshot file is pruned before it is copied
BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class StoreCopy:
    """What :func:`copy_store` wrote: ``head``, the log seq the copy holds (every change with seq <= head,
    none after); ``items``, the live items in it; ``files``, the copied files relative to the copy's folder."""

    head: int
    items: int
    files: tuple[str, ...]


def copy_store(directory: str, dest: str) -> StoreCopy:
    """Copy the store of the index directory ``directory`` into the existing, empty folder ``dest``:
    ``store.sqlite`` (one file, no WAL) and the snapshot files it names."""
    source = db_path(directory)
    if not os.path.isfile(source):
        raise IndexStoreError(f"{directory} is not an index directory (no {DB_FILE})")
    for attempt in range(1, ATTEMPTS + 1):
        _backup_database(source, db_path(dest))
        head, items, names = _read_copy(db_path(dest))
        try:
            files = _copy_snapshots(directory, dest, names)
        except FileNotFoundError as exc:
            logger.info("snapshot %s was pruned during copy %d of %d; copying again", exc.filename, attempt,
                        ATTEMPTS)
            shutil.rmtree(os.path.join(dest, SNAPSHOT_DIR), ignore_errors=True)
            continue
        return StoreCopy(head, items, (DB_FILE, *files))
    raise IndexStoreError(f"could not copy {directory}: its snapshot files were replaced during each of {ATTEMPTS} "
                          "copies (is a compaction running in a loop?)")


def _backup_database(source: str, target: str) -> None:
    """SQLite's online backup of ``source`` into ``target`` (replaced), left as one file in rollback-journal
    mode (a store opening it switches it back to WAL)."""
    src = sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: every page in one step, so one consistent read
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise IndexStoreError(f"cannot back up the index database {source}: {exc}") from None
    finally:
        src.close()


def _read_copy(path: str) -> tuple[int, int, list[str]]:
    """``(log head, live items, snapshot file names)`` of a copied database."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        head = StoreDB.head(conn)
        items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        names = StoreDB.snapshot_files(conn)
    finally:
        conn.close()
    return head, int(items), names


def _copy_snapshots(directory: str, dest: str, names: list[str]) -> list[str]:
    if not names:
        return []
    os.makedirs(os.path.join(dest, SNAPSHOT_DIR), exist_ok=True)
    copied = []
    for name in names:
        relative = os.path.join(SNAPSHOT_DIR, name)
        shutil.copyfile(os.path.join(directory, relative), os.path.join(dest, relative))
        copied.append(relative)
    return copied


def paths_under(db_file: str, folders: list[str]) -> Iterator[tuple[int, str]]:
    """``(id, path)`` of each item of the database ``db_file`` whose file is directly inside one of
    ``folders`` (absolute, without a trailing separator), in id order."""
    conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        for item_id, path in conn.execute("SELECT id, path FROM items ORDER BY id"):
            if os.path.dirname(path) in folders:
                yield int(item_id), path
    finally:
        conn.close()


def relocate_paths(db_file: str, folders: list[str], new_folder: str) -> int:
    """Point the items of ``db_file`` whose file is directly inside one of ``folders`` at the same name in
    ``new_folder``; returns how many changed.  For a store no process has open (a restore in progress):
    paths are metadata, never part of the FAISS view or the change log."""
    conn = sqlite3.connect(db_file, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        moved = [(os.path.join(new_folder, os.path.basename(path)), item_id)
                 for item_id, path in conn.execute("SELECT id, path FROM items")
                 if os.path.dirname(path) in folders]
        conn.executemany("UPDATE items SET path = ? WHERE id = ?", moved)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise IndexStoreError(f"cannot rewrite the item paths of {db_file}: {exc}") from None
    finally:
        conn.close()
    return len(moved)
