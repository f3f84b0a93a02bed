"""The truth of an index: one SQLite database in WAL mode (``<index_dir>/store.sqlite``).

Tables::

    settings     key -> JSON value: format, dim, model identity, config, index type, id counter, log floor
    items        id, vector (float32 blob, as searched), label, path, added_at, source
    changes      the ordered change log: seq (AUTOINCREMENT), op ('add' | 'delete'), item_id, at
    snapshots    the FAISS snapshots written so far: gen, the log seq each covers, file, sha256, tombstones,
                 and the rebuilt snapshot whose structure each descends from (``lineage``)
    label_counts label -> live items carrying it, kept by triggers on ``items`` (an O(1) read)

An add or a delete is one ``BEGIN IMMEDIATE`` transaction that changes ``items`` and appends to ``changes``
(the triggers update ``label_counts`` inside it); it is durable when it commits (``synchronous=FULL``: the
WAL is fsynced at every commit, so a commit survives a power cut, not only a killed process).  SQLite orders
writers across threads and processes; a writer that cannot get the lock within ``busy_timeout_s``
(``$SIMSEARCH_BUSY_TIMEOUT_S``) gets :class:`IndexBusyError`.

Connections come from a small pool: a thread borrows one for a query or a transaction (a SQLite
connection must not be used by two threads at once, and servers may start a thread per request).

Space: every connection sets ``journal_size_limit`` (the ``-wal`` file is cut back to it whenever a checkpoint
lets the log restart; without it the file keeps its largest size for ever).  Readers that search without
pause can keep SQLite from ever restarting the log, so a writer that finds the file past that limit after
its commit checkpoints and truncates it (one ``stat`` per commit; the checkpoint itself only then), and the
process that writes a snapshot does so too (:meth:`StoreDB.checkpoint_wal`).  New
databases use ``auto_vacuum=INCREMENTAL``, so :meth:`StoreDB.reclaim_space` (at compaction) gives the pages of
deleted rows back to the file system; an older database is rewritten once by a forced compaction.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from durablefile import folder_write_problem
from index.base import ItemMeta
from index.errors import IndexBusyError, IndexDamagedError, IndexFullError, IndexReadOnlyError, IndexStoreError

logger = logging.getLogger(__name__)

DB_FILE = "store.sqlite"
FORMAT = "simsearch-index"
# 3: the snapshots table (called checkpoints in 2); 4: label_counts, snapshots.lineage; 5: descriptors
FORMAT_VERSION = 5
UPGRADABLE_VERSIONS = (2, 3, 4)
SYNCHRONOUS = ("full", "normal")
_CHUNK = 900  # stays under SQLite's bound-parameter limit
MAX_IDLE = 8  # pooled connections kept open per process
BUSY_TIMEOUT_ENV = "SIMSEARCH_BUSY_TIMEOUT_S"
DEFAULT_BUSY_TIMEOUT_S = 30.0
# the -wal file is truncated to this size whenever the log restarts after a checkpoint: a single-item write
# adds a few pages, SQLite checkpoints every WAL_AUTOCHECKPOINT_PAGES (its default, ~4 MB), so the file
# stays near 4 MB under steady writes; the limit bounds what a large batch add leaves behind
JOURNAL_SIZE_LIMIT_BYTES = 64 * 2**20
WAL_AUTOCHECKPOINT_PAGES = 1000
CHECKPOINT_BUSY_TIMEOUT_S = 2.0  # a truncating checkpoint waits at most this long for readers and writers
# a writer that finds the log past JOURNAL_SIZE_LIMIT_BYTES after its commit (readers kept SQLite from
# restarting it) truncates it, waiting at most this long for them; after a failure, the next try is once the
# log has grown by another half of the limit (a reader holding one snapshot for long costs writers little)
OVER_LIMIT_CHECKPOINT_WAIT_S = 0.25


def default_busy_timeout_s() -> float:
    """How long a writer waits for the database lock: ``$SIMSEARCH_BUSY_TIMEOUT_S``, default 30 s."""
    try:
        return max(float(os.environ.get(BUSY_TIMEOUT_ENV, DEFAULT_BUSY_TIMEOUT_S)), 0.0)
    except ValueError:
        return DEFAULT_BUSY_TIMEOUT_S

# the live items per label, kept in every write transaction by triggers (so that no code path that changes
# ``items`` can forget it: adds, deletes, replication, migration and the repair that copies the rows); they
# cost ~1.5 us per row added (measured: 200k 128-d rows in one transaction, 1.21 s -> 1.49 s)
LABEL_COUNTS_SCHEMA = """
CREATE TABLE label_counts (label TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER label_counts_add AFTER INSERT ON items BEGIN
    INSERT INTO label_counts VALUES (new.label, 1) ON CONFLICT (label) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER label_counts_delete AFTER DELETE ON items BEGIN
    UPDATE label_counts SET n = n - 1 WHERE label = old.label;
    DELETE FROM label_counts WHERE label = old.label AND n <= 0;
END;
CREATE TRIGGER label_counts_relabel AFTER UPDATE OF label ON items WHEN new.label IS NOT old.label BEGIN
    UPDATE label_counts SET n = n - 1 WHERE label = old.label;
    DELETE FROM label_counts WHERE label = old.label AND n <= 0;
    INSERT INTO label_counts VALUES (new.label, 1) ON CONFLICT (label) DO UPDATE SET n = n + 1;
END;
"""
# the second vector of an item (a copy descriptor), for an index built with one; it leaves with its item
DESCRIPTORS_SCHEMA = """
CREATE TABLE descriptors (id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TRIGGER descriptors_delete AFTER DELETE ON items BEGIN
    DELETE FROM descriptors WHERE id = old.id;
END;
"""
ITEMS, DESCRIPTORS = "items", "descriptors"  # the tables that hold vectors: (id, vector) rows
FILL_LABEL_COUNTS = "INSERT INTO label_counts SELECT label, count(*) FROM items GROUP BY label"
# each snapshot row of a format-3 database descends from the newest rebuilt row at or before it (0: none kept)
FILL_LINEAGE = ("UPDATE snapshots SET lineage = coalesce((SELECT max(r.gen) FROM snapshots r "
                "WHERE r.rebuilt AND r.gen <= snapshots.gen), 0)")

SCHEMA = """
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    vector BLOB NOT NULL,
    label TEXT NOT NULL,
    path TEXT NOT NULL,
    added_at REAL NOT NULL,
    source TEXT
);
CREATE INDEX items_label ON items(label);
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL CHECK (op IN ('add', 'delete')),
    item_id INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE snapshots (
    gen INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    index_type TEXT NOT NULL,
    factory TEXT NOT NULL,
    stored INTEGER NOT NULL,
    tombstones BLOB NOT NULL,
    trained_on INTEGER NOT NULL,
    rebuilt INTEGER NOT NULL,
    created_at REAL NOT NULL,
    lineage INTEGER NOT NULL DEFAULT 0
);
""" + LABEL_COUNTS_SCHEMA + DESCRIPTORS_SCHEMA


@dataclass(frozen=True)
class SnapshotRow:
    """One FAISS snapshot: the file holds the view of the log up to ``seq`` (``tombstones``: ids deleted
    but still inside the file's graph/lists; ``trained_on``: vectors an IVF quantizer was trained on;
    ``rebuilt``: built afresh from the truth, as a compaction does, rather than a copy of a view;
    ``lineage``: the generation of the rebuilt snapshot whose structure this one carries, its own for a
    rebuilt one, 0 for a structure older than every rebuild recorded)."""

    gen: int
    seq: int
    file: str
    sha256: str
    index_type: str
    factory: str
    stored: int
    tombstones: np.ndarray
    trained_on: int
    rebuilt: bool
    created_at: float
    lineage: int


@dataclass(frozen=True)
class Changes:
    """The log after some seq, resolved against ``items`` in one snapshot.

    ``add_ids: (a,) int64`` with ``add_vectors: (a, d) float32`` are the items added in the tail and still
    alive at ``head``; ``delete_ids`` are the items deleted in the tail that were added before it (an item
    both added and deleted in the tail appears in neither)."""

    head: int
    add_ids: np.ndarray
    add_vectors: np.ndarray
    delete_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.add_ids) + len(self.delete_ids)


def db_path(directory: str) -> str:
    return os.path.join(directory, DB_FILE)


class StoreDB:
    """The SQLite truth of one index directory, shared by the threads of a process."""

    def __init__(self, path: str, *, synchronous: str = "full", busy_timeout_s: float = 30.0) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, got {synchronous!r}")
        self.path = path
        self._synchronous = synchronous
        self._timeout = float(busy_timeout_s)
        self._idle: list[sqlite3.Connection] = []  # a pool: any thread borrows one, one at a time
        self._pool_lock = threading.Lock()
        self._closed = False
        self._wal_retry_bytes = 0  # the log size at which an over-limit log that could not be truncated is retried
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the file this process opened first

    # ------------------------------------------------------------------ connections
    @classmethod
    def create(cls, path: str, settings: dict, **options) -> "StoreDB":
        """A new database at ``path`` (which must not exist) holding the schema and ``settings``."""
        if os.path.exists(path):
            raise IndexStoreError(f"{path} already exists")
        db = cls(path, **options)
        conn = sqlite3.connect(path, isolation_level=None)  # creates the file; the schema in one transaction
        try:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only before the first table: see reclaim_space
            conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        finally:
            conn.close()
        with db.transaction() as conn:
            conn.executemany("INSERT INTO settings VALUES (?, ?)",
                             [(k, json.dumps(v)) for k, v in settings.items()])
        return db

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{self.path}?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self._timeout, isolation_level=None,
                                   check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise IndexStoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            conn.execute(f"PRAGMA journal_size_limit={int(JOURNAL_SIZE_LIMIT_BYTES)}")
            conn.execute(f"PRAGMA wal_autocheckpoint={int(WAL_AUTOCHECKPOINT_PAGES)}")
            if self._file_id is None:
                stat = os.stat(self.path)
                self._file_id = (stat.st_dev, stat.st_ino)
        except sqlite3.DatabaseError as exc:
            error = _busy_or_error(exc, self.path, "cannot open")
            if isinstance(error, IndexReadOnlyError):
                return self._connect_read_only(error)
            raise error from None
        return conn

    def _connect_read_only(self, error: IndexReadOnlyError) -> sqlite3.Connection:
        """A connection for reads only, on a folder that cannot be written (a read-only file system, or no
        permission): SQLite's WAL index (``-shm``) cannot be made there, so the file is opened as immutable,
        which is exact only when no log (``-wal``) holds commits beyond it; with one, ``error`` is raised.
        Every write on it fails with SQLite's "readonly" error, i.e. :class:`IndexReadOnlyError`."""
        wal = self.path + "-wal"
        if os.path.exists(wal) and os.path.getsize(wal) > 0:
            raise IndexReadOnlyError(f"{error}; its write-ahead log {wal} holds commits, so it cannot be "
                                     "read without writing either") from None
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True, timeout=self._timeout,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("SELECT 1 FROM settings LIMIT 1").fetchone()
        except sqlite3.DatabaseError as exc:
            raise _busy_or_error(exc, self.path) from None
        logger.warning("index database %s opened read-only (%s)", self.path, error)
        return conn

    @contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        """A connection of the pool for the duration of the block (SQLite connections must not be used by
        two threads at once; a pool rather than one per thread, since servers may start a thread per
        request).  At most ``MAX_IDLE`` stay open between uses."""
        with self._pool_lock:
            if self._closed:
                raise IndexStoreError(f"the index database {self.path} is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            if conn.in_transaction:  # only after an error inside a block
                conn.execute("ROLLBACK")
            with self._pool_lock:
                keep = not self._closed and len(self._idle) < MAX_IDLE
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing never matters for the data
                pass

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): committed when the block ends, rolled back if it raises."""
        with self._borrow() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _busy_or_error(exc, self.path) from None
            try:
                self._check_same_file()
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise _busy_or_error(exc, self.path) from None
                raise
        self._bound_wal()

    def _check_same_file(self) -> None:
        """Raise :class:`IndexStoreError` when the database file this process opened is no longer at ``path``
        (the file or its folder was deleted, moved or replaced): a write through the open connection would go to a
        file nobody opens again, so it is refused rather than acknowledged and lost."""
        try:
            stat = os.stat(self.path)
            same = (stat.st_dev, stat.st_ino) == self._file_id
        except FileNotFoundError:
            same = False
        except OSError:  # cannot tell (e.g. no permission on the folder): SQLite itself reports what it meets
            return
        if self._file_id is not None and not same:
            raise IndexStoreError(f"the index database {self.path} was removed or replaced after this process "
                                  "opened it; nothing was written (open the index again: restart the server)")

    def _bound_wal(self) -> None:
        """After a commit: truncate the log if it has outgrown ``JOURNAL_SIZE_LIMIT_BYTES`` (see the module
        docstring).  The commit is durable already: a busy database only postpones this."""
        try:
            size = os.path.getsize(self.path + "-wal")
        except OSError:
            return
        if size > max(JOURNAL_SIZE_LIMIT_BYTES, self._wal_retry_bytes):
            done = self.checkpoint_wal(OVER_LIMIT_CHECKPOINT_WAIT_S)
            self._wal_retry_bytes = 0 if done else size + JOURNAL_SIZE_LIMIT_BYTES // 2

    def upgrade(self) -> bool:
        """Bring a database of format version 2, 3 or 4 to 5 in one transaction: 2 -> 3 renames the
        ``checkpoints`` table to ``snapshots``; 3 -> 4 adds ``label_counts`` (filled from ``items``, then
        kept by its triggers) and ``snapshots.lineage`` (each row's newest rebuilt ancestor among the rows
        kept); 4 -> 5 adds the (empty) ``descriptors`` table.  Does nothing to any other version, so
        concurrent openers upgrade once.  Returns whether it changed anything."""
        with self.transaction() as conn:
            version = StoreDB.get_setting(conn, "format_version")
            if StoreDB.get_setting(conn, "format") != FORMAT or version not in UPGRADABLE_VERSIONS:
                return False
            if version == 2:
                conn.execute("ALTER TABLE checkpoints RENAME TO snapshots")
            if version in (2, 3):
                conn.execute("ALTER TABLE snapshots ADD COLUMN lineage INTEGER NOT NULL DEFAULT 0")
                conn.execute(FILL_LINEAGE)
                for statement in _statements(LABEL_COUNTS_SCHEMA):
                    conn.execute(statement)
                conn.execute(FILL_LABEL_COUNTS)
            for statement in _statements(DESCRIPTORS_SCHEMA):
                conn.execute(statement)
            StoreDB.set_setting(conn, "format_version", FORMAT_VERSION)
        logger.info("upgraded %s from format version %d to %d", self.path, version, FORMAT_VERSION)
        return True

    # ------------------------------------------------------------------ space
    def checkpoint_wal(self, wait_s: float = CHECKPOINT_BUSY_TIMEOUT_S) -> bool:
        """Copy the whole log into the database and truncate the ``-wal`` file to zero bytes (SQLite's
        ``wal_checkpoint(TRUNCATE)``), waiting at most ``wait_s`` for readers and writers (it holds new
        writers back while it waits).  Returns whether it completed; a busy database is left as it is (the
        next commit past the limit or the next snapshot tries again)."""
        with self._borrow() as conn:
            try:
                conn.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
                try:
                    busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            except sqlite3.DatabaseError as exc:
                if isinstance(_busy_or_error(exc, self.path), IndexBusyError):
                    return False
                raise _busy_or_error(exc, self.path) from None
        return not busy

    def reclaim_space(self, *, rewrite: bool = False) -> int:
        """Give the pages of deleted rows back to the file system; returns the bytes the database file (with
        its log) shrank by.  A database with ``auto_vacuum=INCREMENTAL`` (every one created since format 4)
        runs ``PRAGMA incremental_vacuum``; an older one keeps its free pages for later rows unless
        ``rewrite``, which runs ``VACUUM`` once to switch it to incremental (a full copy of the database,
        during which writers wait: for ``simsearch index compact --force``).  Then the log is checkpointed
        and truncated."""
        before = self._file_bytes()
        with self._borrow() as conn:
            try:
                mode = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
                if mode == 2:  # INCREMENTAL
                    conn.executescript("PRAGMA incremental_vacuum;")  # (execute() would free one page only)
                elif rewrite:
                    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
                    conn.execute("VACUUM")
                    logger.info("index database %s rewritten with auto_vacuum=INCREMENTAL", self.path)
            except sqlite3.DatabaseError as exc:
                raise _busy_or_error(exc, self.path) from None
        self.checkpoint_wal()
        return max(before - self._file_bytes(), 0)

    def _file_bytes(self) -> int:
        return sum(os.path.getsize(self.path + suffix) for suffix in ("", "-wal")
                   if os.path.exists(self.path + suffix))

    @contextmanager
    def read_transaction(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query in the block sees the same committed state."""
        with self._borrow() as conn:
            try:  # a corrupt file ("database disk image is malformed") surfaces here, in a read
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:
                        conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise _busy_or_error(exc, self.path) from None

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._borrow() as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise _busy_or_error(exc, self.path) from None

    # ------------------------------------------------------------------ settings
    def settings(self) -> dict:
        return {k: json.loads(v) for k, v in self.query("SELECT key, value FROM settings")}

    @staticmethod
    def set_setting(conn: sqlite3.Connection, key: str, value: object) -> None:
        conn.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, json.dumps(value)))

    @staticmethod
    def get_setting(conn: sqlite3.Connection, key: str, default: object = None) -> object:
        row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # ------------------------------------------------------------------ writes
    @staticmethod
    def insert_items(conn: sqlite3.Connection, xb: np.ndarray, labels: Sequence[str], paths: Sequence[str],
                     sources: Sequence[str | None], descriptors: np.ndarray | None = None) -> np.ndarray:
        """Inside a transaction: store ``xb: (n, d) float32`` (and each item's second vector, ``descriptors:
        (n, d2) float32``, if given) and log their adds; returns the new ids."""
        n = len(xb)
        start = int(StoreDB.get_setting(conn, "next_id", 0))
        ids = np.arange(start, start + n, dtype=np.int64)
        now = time.time()
        conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
                         ((int(i), x.tobytes(), lab, p, now, s)
                          for i, x, lab, p, s in zip(ids, xb, labels, paths, sources, strict=True)))
        if descriptors is not None:
            conn.executemany("INSERT INTO descriptors VALUES (?, ?)",
                             ((int(i), x.tobytes()) for i, x in zip(ids, descriptors, strict=True)))
        conn.executemany("INSERT INTO changes (op, item_id, at) VALUES ('add', ?, ?)",
                         ((int(i), now) for i in ids))
        StoreDB.set_setting(conn, "next_id", start + n)
        return ids

    @staticmethod
    def insert_replicated(conn: sqlite3.Connection, xb: np.ndarray, items: Sequence[ItemMeta],
                          descriptors: np.ndarray | None = None) -> int:
        """Inside a transaction: store ``items`` under their own ids with ``xb: (n, d) float32`` (and
        ``descriptors: (n, d2) float32``, if given: a replica's copy of another store's items; ids already
        present are left as they are) and log the adds; the id counter moves past every id.  Returns how many
        were new."""
        now = time.time()
        added = []
        for row, (x, item) in enumerate(zip(xb, items, strict=True)):
            cur = conn.execute("INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?, ?, ?)",
                               (int(item.id), x.tobytes(), item.label, item.path, float(item.added_at), item.source))
            if cur.rowcount:
                added.append(int(item.id))
                if descriptors is not None:
                    conn.execute("INSERT INTO descriptors VALUES (?, ?)", (int(item.id), descriptors[row].tobytes()))
        conn.executemany("INSERT INTO changes (op, item_id, at) VALUES ('add', ?, ?)", ((i, now) for i in added))
        if items:
            top = max(int(item.id) for item in items) + 1
            if top > int(StoreDB.get_setting(conn, "next_id", 0)):
                StoreDB.set_setting(conn, "next_id", top)
        return len(added)

    @staticmethod
    def log_tail(conn: sqlite3.Connection, seq: int) -> tuple[int, list[int], list[int]] | None:
        """``(head, ids added after seq and still alive, ids deleted after seq that existed before it)``, or None
        when the log no longer reaches back to ``seq`` (pruned by compaction)."""
        if seq < int(StoreDB.get_setting(conn, "log_floor", 0)):
            return None
        head = StoreDB.head(conn)
        added: set[int] = set()
        deleted: set[int] = set()
        for op, item_id in conn.execute("SELECT c.op, c.item_id FROM changes c WHERE c.seq > ? AND c.seq <= ? "
                                        "ORDER BY c.seq", (seq, head)):
            if op == "add":
                added.add(item_id)
                deleted.discard(item_id)
            else:
                added.discard(item_id)
                deleted.add(item_id)
        return head, sorted(added), sorted(deleted)

    def live_ids(self) -> np.ndarray:
        rows = self.query("SELECT id FROM items ORDER BY id")
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    @staticmethod
    def delete_items(conn: sqlite3.Connection, ids: Sequence[int]) -> list[ItemMeta]:
        """Inside a transaction: delete the live items among ``ids`` and log it; returns what was deleted."""
        gone = list(StoreDB.get_items(conn, ids).values())
        now = time.time()
        conn.executemany("DELETE FROM items WHERE id = ?", ((m.id,) for m in gone))
        conn.executemany("INSERT INTO changes (op, item_id, at) VALUES ('delete', ?, ?)",
                         ((m.id, now) for m in gone))
        return gone

    # ------------------------------------------------------------------ reads
    @staticmethod
    def head(conn: sqlite3.Connection) -> int:
        """The seq of the newest change ever logged (0 for none); an O(1) lookup."""
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return int(row[0]) if row else 0

    def head_and_snapshot(self) -> tuple[int, int]:
        """``(log head, newest snapshot gen)``: the one cheap query a reader makes before each search."""
        row = self.query("SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'changes'), "
                         "(SELECT max(gen) FROM snapshots)")[0]
        return int(row[0] or 0), int(row[1] or 0)

    @staticmethod
    def changes_since(conn: sqlite3.Connection, seq: int, dim: int, table: str = ITEMS) -> Changes:
        """The resolved tail of the log after ``seq`` (call inside :meth:`snapshot`), with the vectors of
        ``table`` (:data:`ITEMS` or :data:`DESCRIPTORS`)."""
        rows = conn.execute(f"SELECT c.op, c.item_id, i.vector FROM changes c LEFT JOIN {_vector_table(table)} i "
                            "ON i.id = c.item_id WHERE c.seq > ? ORDER BY c.seq", (seq,)).fetchall()
        head = StoreDB.head(conn)
        added: dict[int, bytes] = {}
        deleted: list[int] = []
        added_in_tail: set[int] = set()
        for op, item_id, blob in rows:
            if op == "add":
                added_in_tail.add(item_id)
                if blob is not None:  # still alive at the snapshot
                    added[item_id] = blob
            elif item_id not in added_in_tail:
                deleted.append(item_id)
        ids = np.fromiter(added.keys(), dtype=np.int64, count=len(added))
        xb = (np.frombuffer(b"".join(added.values()), dtype=np.float32).reshape(len(added), dim)
              if added else np.zeros((0, dim), dtype=np.float32))
        return Changes(head, ids, xb, np.array(sorted(deleted), dtype=np.int64))

    @staticmethod
    def get_items(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, ItemMeta]:
        out: dict[int, ItemMeta] = {}
        ids = sorted({int(i) for i in ids})
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT id, path, label, added_at, source FROM items WHERE id IN ({marks})",
                                    chunk):
                out[row[0]] = ItemMeta(*row)
        return out

    def items(self, ids: Sequence[int]) -> dict[int, ItemMeta]:
        """Metadata of the ids that are live, keyed by id."""
        with self._borrow() as conn:
            try:
                return self.get_items(conn, ids)
            except sqlite3.DatabaseError as exc:
                raise _busy_or_error(exc, self.path) from None

    def vectors(self, ids: Sequence[int], dim: int, table: str = ITEMS) -> dict[int, np.ndarray]:
        found, xb = self.vectors_of(np.asarray(sorted({int(i) for i in ids}), dtype=np.int64), dim, table)
        return {int(i): x for i, x in zip(found, xb)}

    def vectors_of(self, ids: np.ndarray, dim: int, table: str = ITEMS) -> tuple[np.ndarray, np.ndarray]:
        """``(found (f,) int64 sorted, xb (f, d) float32)``: the stored vectors (of ``table``) of the live ids
        among ``ids`` (one query per 900 ids; the exact re-ranking of :mod:`index.rerank` reads its candidates
        here)."""
        table = _vector_table(table)
        ids = [int(i) for i in ids]
        rows = []
        with self._borrow() as conn:
            try:
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start:start + _CHUNK]
                    rows += conn.execute(f"SELECT id, vector FROM {table} WHERE id IN ({','.join('?' * len(chunk))})",
                                         chunk).fetchall()
            except sqlite3.DatabaseError as exc:
                raise _busy_or_error(exc, self.path) from None
        rows.sort()
        found = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return found, _vector_block(rows, dim)

    def count(self) -> int:
        """Live items (the sum of ``label_counts``: O(labels), not O(items))."""
        return int(self.query("SELECT coalesce(sum(n), 0) FROM label_counts")[0][0])

    @staticmethod
    def live_count(conn: sqlite3.Connection) -> int:
        """Live items, inside a transaction (as :meth:`count`)."""
        return int(conn.execute("SELECT coalesce(sum(n), 0) FROM label_counts").fetchone()[0])

    def label_counts(self) -> dict[str, int]:
        """Live items per label, sorted by label (the ``label_counts`` table: O(labels))."""
        return dict(self.query("SELECT label, n FROM label_counts ORDER BY label"))

    def label_count(self, label: str) -> int:
        """Live items carrying ``label`` (one primary-key lookup)."""
        row = self.query("SELECT n FROM label_counts WHERE label = ?", (label,))
        return int(row[0][0]) if row else 0

    @staticmethod
    def label_vectors(conn: sqlite3.Connection, label: str, dim: int, ids: Sequence[int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (m,) int64 ascending, xb (m, d) float32)`` of the live items carrying ``label``, or of those
        among ``ids`` when given (an index seek on ``items_label``, or primary-key lookups)."""
        if ids is None:
            rows = conn.execute("SELECT id, vector FROM items WHERE label = ? ORDER BY id", (label,)).fetchall()
        else:
            wanted = sorted({int(i) for i in ids})
            rows = []
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start:start + _CHUNK]
                rows += conn.execute(f"SELECT id, vector FROM items WHERE label = ? AND id IN "
                                     f"({','.join('?' * len(chunk))}) ORDER BY id", (label, *chunk)).fetchall()
        found = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        xb = (np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
              if rows else np.zeros((0, dim), dtype=np.float32))
        return found, xb

    @staticmethod
    def label_ids(conn: sqlite3.Connection, label: str) -> np.ndarray:
        """The live ids carrying ``label``, ``(m,) int64`` ascending (an index seek on ``items_label``)."""
        rows = conn.execute("SELECT id FROM items WHERE label = ? ORDER BY id", (label,)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def id_after(self, value: int) -> int | None:
        """The smallest live id >= ``value`` (an O(log n) seek), or None."""
        row = self.query("SELECT id FROM items WHERE id >= ? ORDER BY id LIMIT 1", (int(value),))
        return int(row[0][0]) if row else None

    def id_range(self) -> tuple[int, int] | None:
        row = self.query("SELECT min(id), max(id) FROM items")[0]
        return None if row[0] is None else (int(row[0]), int(row[1]))

    def random_ids(self, n: int, rng: np.random.Generator, live: int) -> np.ndarray:
        """``min(n, live)`` distinct live ids drawn with ``rng`` (``live``: how many items are live) by seeking
        random points of the id range: each draw is one O(log n) lookup (an id after a gap of deleted ids is a
        little more likely)."""
        bounds = self.id_range()
        if bounds is None:
            return np.zeros(0, dtype=np.int64)
        want = min(n, live)
        picked: dict[int, None] = {}
        for _ in range(4 * n):
            found = self.id_after(int(rng.integers(bounds[0], bounds[1] + 1)))
            if found is not None:
                picked.setdefault(found)
            if len(picked) >= want:
                break
        # after long runs of deleted ids most draws land on the same few ids: take the rest by walking on
        # from a random point (each step finds a new id or one of the < want already picked; one wrap-around)
        cursor = int(rng.integers(bounds[0], bounds[1] + 1)) if len(picked) < want else bounds[0]
        for _ in range(2 * want + 1):
            if len(picked) >= want:
                break
            found = self.id_after(cursor)
            if found is None:
                cursor = bounds[0]
                continue
            picked.setdefault(found)
            cursor = found + 1
        return np.array(list(picked), dtype=np.int64)

    def iter_items(self, batch: int = 10_000) -> Iterator[ItemMeta]:
        """All live items in id order, ``batch`` rows per query (no transaction is held between batches)."""
        last = -1
        while True:
            rows = self.query("SELECT id, path, label, added_at, source FROM items WHERE id > ? ORDER BY id LIMIT ?",
                              (last, batch))
            if not rows:
                return
            for row in rows:
                yield ItemMeta(*row)
            last = rows[-1][0]

    @staticmethod
    def all_vectors(conn: sqlite3.Connection, dim: int, batch: int = 50_000,
                    table: str = ITEMS) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (n,) int64, xb (n, d) float32)`` of every live item (its vector in ``table``) in id order
        (call inside a snapshot)."""
        n = int(conn.execute(f"SELECT count(*) FROM {_vector_table(table)}").fetchone()[0])
        ids = np.empty(n, dtype=np.int64)
        xb = np.empty((n, dim), dtype=np.float32)
        filled = 0
        for chunk_ids, chunk in StoreDB.iter_vectors(conn, dim, batch, table):
            m = min(len(chunk_ids), n - filled)
            ids[filled:filled + m], xb[filled:filled + m] = chunk_ids[:m], chunk[:m]
            filled += m
        return ids[:filled], xb[:filled]

    @staticmethod
    def iter_vectors(conn: sqlite3.Connection, dim: int, batch: int = 50_000,
                     table: str = ITEMS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every live item as chunks ``(ids (c,) int64, xb (c, d) float32)`` in id order, ``batch`` rows each,
        with its vector in ``table`` (call inside a read transaction: the chunks are one consistent state)."""
        return _vector_pages(lambda sql, params: conn.execute(sql, params).fetchall(), dim, batch, table)

    def vector_pages(self, dim: int, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """As :meth:`iter_vectors`, each chunk read on its own (no snapshot is held between chunks, so a long
        reader never keeps the WAL from being checkpointed; an item written meanwhile may or may not appear)."""
        return _vector_pages(self.query, dim, batch)

    @staticmethod
    def sample_vectors(conn: sqlite3.Connection, dim: int, positions: Callable[[int], np.ndarray],
                       batch: int = 100_000) -> np.ndarray:
        """``(s, d) float32``: the vectors of the live items at ``positions(n)`` (sorted positions in id order of
        the ``n`` live items), read without loading the others (call inside a read transaction)."""
        parts, last = [], -1
        while True:  # the ids alone, 8 bytes an item
            rows = conn.execute("SELECT id FROM items WHERE id > ? ORDER BY id LIMIT ?", (last, batch)).fetchall()
            if not rows:
                break
            parts.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
            last = rows[-1][0]
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        chosen = ids[positions(len(ids))].tolist()
        rows = []
        for start in range(0, len(chosen), _CHUNK):
            chunk = chosen[start:start + _CHUNK]
            rows += conn.execute(f"SELECT id, vector FROM items WHERE id IN ({','.join('?' * len(chunk))})",
                                 chunk).fetchall()
        rows.sort()
        return _vector_block(rows, dim)

    # ------------------------------------------------------------------ snapshots
    @staticmethod
    def snapshot_row(conn: sqlite3.Connection, gen: int | None = None) -> SnapshotRow | None:
        """The newest snapshot (or generation ``gen``), or None."""
        sql = ("SELECT gen, seq, file, sha256, index_type, factory, stored, tombstones, trained_on, rebuilt, "
               "created_at, lineage FROM snapshots ")
        row = (conn.execute(sql + "ORDER BY gen DESC LIMIT 1").fetchone() if gen is None
               else conn.execute(sql + "WHERE gen = ?", (gen,)).fetchone())
        if row is None:
            return None
        return SnapshotRow(*row[:7], np.frombuffer(row[7], dtype=np.int64).copy(), row[8], bool(row[9]), row[10],
                           row[11])

    @staticmethod
    def snapshot_files(conn: sqlite3.Connection) -> list[str]:
        """The file names of every recorded snapshot, oldest first."""
        return [row[0] for row in conn.execute("SELECT file FROM snapshots ORDER BY gen")]

    @staticmethod
    def newest_snapshot_time(conn: sqlite3.Connection) -> tuple[int, float] | None:
        """``(seq, created_at)`` of the newest snapshot, or None (cheap: no tombstone list)."""
        row = conn.execute("SELECT seq, created_at FROM snapshots ORDER BY gen DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), float(row[1]))

    @staticmethod
    def newest_lineage(conn: sqlite3.Connection) -> int:
        """The newest rebuild any recorded snapshot descends from (0 for none)."""
        return int(conn.execute("SELECT coalesce(max(lineage), 0) FROM snapshots").fetchone()[0])

    @staticmethod
    def record_snapshot(conn: sqlite3.Connection, *, seq: int, file: str, sha256: str, index_type: str,
                        factory: str, stored: int, tombstones: np.ndarray, trained_on: int, rebuilt: bool,
                        lineage: int) -> int:
        """Record a snapshot file; returns its generation.  ``lineage``: the rebuilt snapshot its structure
        descends from (ignored when ``rebuilt``: a rebuilt snapshot is its own lineage)."""
        cur = conn.execute("INSERT INTO snapshots (seq, file, sha256, index_type, factory, stored, tombstones, "
                           "trained_on, rebuilt, created_at, lineage) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (seq, file, sha256, index_type, factory, stored,
                            np.ascontiguousarray(tombstones, dtype=np.int64).tobytes(), trained_on, int(rebuilt),
                            time.time(), int(lineage)))
        gen = int(cur.lastrowid)
        if rebuilt:
            conn.execute("UPDATE snapshots SET lineage = gen WHERE gen = ?", (gen,))
        return gen

    @staticmethod
    def prune(conn: sqlite3.Connection, keep_snapshots: int = 2) -> tuple[list[str], int]:
        """Drop all but the newest ``keep_snapshots`` snapshot rows and the log entries the oldest kept one
        covers (a view loaded from any kept snapshot can still catch up).  Returns (dropped files, new floor)."""
        kept = conn.execute("SELECT gen, seq FROM snapshots ORDER BY gen DESC LIMIT ?",
                            (keep_snapshots,)).fetchall()
        if len(kept) < keep_snapshots:
            return [], int(StoreDB.get_setting(conn, "log_floor", 0))
        oldest_gen, floor = kept[-1]
        dropped = [r[0] for r in conn.execute("SELECT file FROM snapshots WHERE gen < ?", (oldest_gen,))]
        conn.execute("DELETE FROM snapshots WHERE gen < ?", (oldest_gen,))
        conn.execute("DELETE FROM changes WHERE seq <= ?", (floor,))
        StoreDB.set_setting(conn, "log_floor", int(floor))
        return dropped, int(floor)


def _statements(script: str) -> list[str]:
    """The statements of a schema script, one string each (a trigger's body keeps its inner semicolons)."""
    statements, current = [], ""
    for line in script.strip().splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


def _vector_pages(fetch: Callable[[str, Sequence], list[tuple]], dim: int, batch: int,
                  table: str = ITEMS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, xb)`` chunks of the live items (their vectors in ``table``) in id order, one ``fetch(sql, params)``
    a chunk."""
    sql = f"SELECT id, vector FROM {_vector_table(table)} WHERE id > ? ORDER BY id LIMIT ?"
    last = -1
    while True:
        rows = fetch(sql, (last, batch))
        if not rows:
            return
        yield np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)), _vector_block(rows, dim)
        last = rows[-1][0]


def _vector_table(table: str) -> str:
    """``table`` if it is one of the tables that hold vectors (the name goes into SQL text)."""
    if table not in (ITEMS, DESCRIPTORS):
        raise ValueError(f"no vectors in table {table!r}")
    return table


def _vector_block(rows: list[tuple], dim: int) -> np.ndarray:
    """``(len(rows), dim) float32`` from rows whose second column is a vector blob."""
    if not rows:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim).copy()


def _busy_or_error(exc: sqlite3.DatabaseError, path: str, doing: str = "") -> Exception:
    """The index error for a SQLite error, by SQLite's error code (the detail stays in the message, for the log);
    ``doing``: what failed, e.g. "cannot open" (prefixed to the message)."""
    message = str(exc)
    if doing:
        return _busy_or_error(exc, path).__class__(f"{doing} the index database {path}: {message}")
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary code of an extended one
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in message or "busy" in message:
        return IndexBusyError(f"the index database {path} is busy (another writer held it too long): {message}")
    if code == sqlite3.SQLITE_FULL:
        return IndexFullError(f"index database {path}: {message}")
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH) or (
            code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR) and _folder_read_only(path)):
        return IndexReadOnlyError(f"index database {path}: {message}")
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return IndexDamagedError(f"index database {path}: {message}")
    return IndexStoreError(f"index database {path}: {message}")


def _folder_read_only(path: str) -> bool:
    return folder_write_problem(os.path.dirname(path) or ".") is not None
