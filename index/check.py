"""``check_store``: what is damaged in an index directory, and what can be recovered.

- the truth (``store.sqlite``): SQLite's ``PRAGMA quick_check`` (every page and record, the index b-trees'
  entry counts; not their content).  Damage confined to the ``items_label`` index b-tree is recovered by
  ``REINDEX``; damage to the tables is recovered only from a backup (``simsearch index restore``);
- the FAISS snapshots: each file's sha256 against the one recorded when it was written.  A damaged newest
  snapshot costs nothing but time while the truth is intact: every process that opens the index builds its view
  from the truth instead, and :func:`repair_store` writes a new snapshot.  An older damaged one is not read.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field

from durablefile import atomic_path, file_sha256, fsync_dir
from index.db import DB_FILE, FILL_LINEAGE, FORMAT_VERSION, SCHEMA, StoreDB, db_path
from index.keeper import SNAPSHOT_DIR

logger = logging.getLogger(__name__)

QUICK_CHECK_ROWS = 20  # problems quick_check reports at most (it stops there)
TABLES = ("settings", "items", "changes", "snapshots", "descriptors")  # descriptors: format 5 on


@dataclass(frozen=True)
class SnapshotCheck:
    gen: int
    file: str
    status: str  # "ok", "missing" or "damaged" (sha256 differs)
    newest: bool


@dataclass
class CheckReport:
    """The outcome of :func:`check_store` (``damaged``: something that a process would read is damaged)."""

    database: str = "ok"  # "ok", "damaged" or "unreadable"
    tables_readable: bool = True  # every row of every table reads back (a damage confined to the label index)
    database_problems: list[str] = field(default_factory=list)
    snapshots: list[SnapshotCheck] = field(default_factory=list)
    recovery: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return self.database != "ok" or any(s.newest and s.status != "ok" for s in self.snapshots)

    def to_dict(self) -> dict:
        return {"damaged": self.damaged, **asdict(self)}

    def summary(self) -> str:
        """One readable line."""
        what = ([f"database {self.database}"] if self.database != "ok" else [])
        what += [f"newest snapshot {s.gen} {s.status}" for s in self.snapshots if s.newest and s.status != "ok"]
        older = [f"older snapshot {s.gen} {s.status} (not read)" for s in self.snapshots
                 if not s.newest and s.status != "ok"]
        done = "; ".join(self.repaired)
        if not what:
            line = "ok: the database passes quick_check and the newest snapshot matches its sha256"
            return "; ".join(x for x in (line, done, *older) if x)
        return f"damaged: {', '.join(what)}; " + "; ".join(x for x in (done, *self.recovery, *older) if x)


QUICK_CHECK_SQL = f"PRAGMA quick_check({QUICK_CHECK_ROWS})"
# Opening an index runs quick_check on a database up to this size only: it reads every page (0.8 ms a MB from
# the page cache, far more from a cold disk: 35 s to open 10M items), so a larger one opens without it and
# `simsearch index check` (from the compaction timer) verifies it; a damaged page still fails the read that
# meets it with IndexDamagedError.
OPEN_CHECK_MAX_BYTES = 256 * 2**20


def checked_at_open(path: str) -> bool:
    """Whether opening the database at ``path`` runs :data:`QUICK_CHECK_SQL` (see :data:`OPEN_CHECK_MAX_BYTES`)."""
    try:
        return os.path.getsize(path) <= OPEN_CHECK_MAX_BYTES
    except OSError:
        return True


def quick_check_problems(rows: list[tuple]) -> list[str]:
    """The problems in the rows of :data:`QUICK_CHECK_SQL` ([] when it says "ok")."""
    found = [r[0] for r in rows]
    return [] if found == ["ok"] else found


def _open_read_only(path: str) -> sqlite3.Connection:
    """A read-only connection (immutable when the folder cannot be written, as :class:`StoreDB` does)."""
    if not os.path.isfile(path):
        raise sqlite3.OperationalError(f"{DB_FILE} is missing")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
        return conn
    except sqlite3.OperationalError:
        return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, isolation_level=None)


def quick_check(path: str) -> list[str]:
    """SQLite's ``PRAGMA quick_check`` of the database at ``path`` (read-only): [] when it is sound."""
    conn = _open_read_only(path)
    try:
        return quick_check_problems(conn.execute(QUICK_CHECK_SQL).fetchall())
    finally:
        conn.close()


def looks_like_index(directory: str) -> bool:
    """Whether ``directory`` is an index directory, damaged or not: it holds the database or the snapshots folder."""
    return os.path.isfile(db_path(directory)) or os.path.isdir(os.path.join(directory, SNAPSHOT_DIR))


def check_store(directory: str) -> CheckReport:
    """Check the truth and the snapshots of the index in ``directory`` without changing anything."""
    report = CheckReport()
    path = db_path(directory)
    try:
        report.database_problems = quick_check(path)
    except sqlite3.DatabaseError as exc:
        report.database_problems = [str(exc)]
        report.database = "unreadable" if not os.path.isfile(path) else "damaged"
    if report.database_problems and report.database == "ok":
        report.database = "damaged"
    if report.database == "damaged":
        report.tables_readable = _tables_readable(path)
    rows = []
    if report.database == "ok" or report.tables_readable:
        try:
            conn = _open_read_only(path)
            try:
                rows = conn.execute("SELECT gen, file, sha256 FROM snapshots ORDER BY gen DESC").fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            report.database_problems.append(f"the snapshots table cannot be read: {exc}")
    for position, (gen, name, sha256) in enumerate(rows):
        file = os.path.join(directory, SNAPSHOT_DIR, name)
        status = "missing" if not os.path.isfile(file) else "ok" if file_sha256(file) == sha256 else "damaged"
        report.snapshots.append(SnapshotCheck(int(gen), name, status, position == 0))
    report.recovery = _advice(report, directory)
    return report


def _tables_of(conn: sqlite3.Connection, schema: str) -> list[str]:
    """The tables of :data:`TABLES` that database ``schema`` (``main`` or an attached name) holds."""
    names = {row[0] for row in conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")}
    return [table for table in TABLES if table in names]


def _tables_readable(path: str) -> bool:
    """Whether every row of every table reads back by a full scan (not through an index)."""
    try:
        conn = _open_read_only(path)
        try:
            for table in _tables_of(conn, "main"):
                for _row in conn.execute(f"SELECT * FROM {table} NOT INDEXED"):  # noqa: S608 - our names
                    pass
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False
    return True


def rebuild_database(directory: str) -> str:
    """Copy every row of the (damaged, but readable by full scans) database into a new one with the schema and
    the log's sequence, then put it in place; the damaged files move to ``damaged-<time>/`` (returned).  A
    database of format 3 or 4 comes out in format 5 (as :meth:`StoreDB.upgrade` makes it).  Only with no process
    using the index."""
    path = db_path(directory)
    kept = os.path.join(directory, time.strftime("damaged-%Y%m%dT%H%M%S"))
    with atomic_path(path) as tmp:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # as StoreDB.create: before the first table
            conn.executescript("BEGIN;" + SCHEMA + "COMMIT;")
            conn.execute("ATTACH DATABASE ? AS old", (f"file:{path}?mode=ro",))
            conn.execute("BEGIN")
            for table in _tables_of(conn, "old"):  # label_counts is filled by its triggers as the items are copied
                names = ", ".join(row[1] for row in conn.execute(f"PRAGMA old.table_info({table})"))
                # WHERE 1: no raw copy of b-trees (SQLite's transfer optimisation would read the damaged ones)
                conn.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM old.{table} NOT INDEXED "
                             "WHERE 1")
            version = StoreDB.get_setting(conn, "format_version")
            if version == 3:
                conn.execute(FILL_LINEAGE)
            if version in (3, 4):
                StoreDB.set_setting(conn, "format_version", FORMAT_VERSION)
            conn.execute("DELETE FROM main.sqlite_sequence")
            conn.execute("INSERT INTO main.sqlite_sequence SELECT * FROM old.sqlite_sequence")
            conn.execute("COMMIT")
            conn.execute("DETACH DATABASE old")
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        os.makedirs(kept, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):  # the old log must never be replayed into the new file
            if os.path.exists(path + suffix):
                os.replace(path + suffix, os.path.join(kept, DB_FILE + suffix))
        fsync_dir(kept)
    logger.warning("index %s: database rebuilt from its rows; the damaged files are in %s", directory, kept)
    return kept


def _advice(report: CheckReport, directory: str) -> list[str]:
    advice = []
    if report.database == "damaged" and report.tables_readable:
        advice.append("the database's pages are damaged but every row of its tables reads back: with the servers "
                      f"stopped, simsearch index check --repair {directory} copies the rows into a new database")
    elif report.database != "ok":
        advice.append("the database (the truth) is damaged: restore the newest backup with "
                      "simsearch index restore BACKUP NEW_DIRECTORY; acknowledged writes after that backup are lost")
    if any(s.newest and s.status != "ok" for s in report.snapshots):
        if report.database == "ok":
            advice.append("the newest snapshot is damaged but the truth is intact: servers build their view from "
                          f"the database meanwhile; simsearch index check --repair {directory} writes a new snapshot")
        else:
            advice.append("the newest snapshot is damaged too; it is rebuilt once the database is recovered")
    return advice


def repair_store(directory: str) -> CheckReport:
    """Recover what can be recovered in place: ``REINDEX`` for a damaged label index, a new snapshot (built from
    the truth) for a damaged newest snapshot.  Returns the check made afterwards, with what was done."""
    from index.store import IndexStore

    report = check_store(directory)
    done = []
    if report.database == "damaged" and report.tables_readable:
        moved = rebuild_database(directory)
        done.append(f"copied every row into a new database (the damaged files are kept in {moved})")
        report = check_store(directory)
    if report.database == "ok" and any(s.newest and s.status != "ok" for s in report.snapshots):
        store = IndexStore.open(directory)  # its view is built from the truth: the snapshot is unusable
        try:
            gen = store.snapshot()
        finally:
            store.close()
        done.append(f"wrote snapshot {gen} from the truth")
    after = check_store(directory)
    after.repaired = done
    logger.info("repair of %s: %s", directory, done or "nothing to do")
    return after
