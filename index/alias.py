"""Aliases: a name that an API server, the CLI and the notebook open like an index, and that names the index
now in use.  Switching an alias is one durable write; every server that follows it moves to the new index
(see :mod:`engine.live`), and the previous target stays on record for a rollback.

Two kinds, one interface (:class:`Alias`):

* an *alias directory*: a folder holding ``alias.sqlite`` (SQLite in WAL mode: the history of targets, newest
  last; the current target is the newest row), whose targets are index directories or Milvus locations;
* a Milvus alias (``milvus://HOST:PORT/ALIAS``): Milvus's own alias of a collection (:mod:`index.milvus.alias`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from durablefile import atomic_path, fsync_dir
from index.errors import IndexStoreError

ALIAS_FILE = "alias.sqlite"
_SCHEMA = """
CREATE TABLE history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    at REAL NOT NULL,
    note TEXT NOT NULL,
    forced INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class AliasEntry:
    """One switch of an alias: the target it named from ``at`` (Unix seconds) on, and why."""

    seq: int
    target: str
    at: float
    note: str = ""
    forced: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class Alias(Protocol):
    """A name for the index now in use; :meth:`version` is cheap enough to poll."""

    @property
    def location(self) -> str: ...  # what ``--index`` names
    def target(self) -> str | None: ...  # the location of the index in use (None: never set)
    def version(self) -> object: ...  # changes whenever the target does
    def history(self) -> list[AliasEntry]: ...  # oldest first
    def set(self, target: str, *, note: str = "", forced: bool = False) -> AliasEntry: ...
    def close(self) -> None: ...


class AliasDirectory:
    """An alias kept in ``<folder>/alias.sqlite``; thread-safe, and safe from several processes at once."""

    def __init__(self, folder: str) -> None:
        self._folder = os.path.abspath(folder)
        self._path = os.path.join(self._folder, ALIAS_FILE)

    @classmethod
    def create(cls, folder: str | os.PathLike) -> "AliasDirectory":
        """A new alias in ``folder`` (created if missing; it must not hold anything else)."""
        folder = os.path.abspath(os.fspath(folder))
        if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
            raise IndexStoreError(f"{folder} exists and is not an empty folder: an alias needs a folder of its own")
        os.makedirs(folder, exist_ok=True)
        with atomic_path(os.path.join(folder, ALIAS_FILE)) as tmp:
            conn = sqlite3.connect(tmp)
            try:
                conn.executescript(_SCHEMA)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.commit()
            finally:
                conn.close()
        fsync_dir(folder)
        return cls(folder)

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "AliasDirectory":
        folder = os.fspath(folder)
        if not is_alias_directory(folder):
            raise IndexStoreError(f"{folder} is not an alias (no {ALIAS_FILE})")
        return cls(folder)

    @property
    def location(self) -> str:
        return self._folder

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise IndexStoreError(f"alias {self._folder}: {exc}") from None
        try:
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        except sqlite3.Error as exc:
            raise IndexStoreError(f"alias {self._folder}: {exc}") from None
        finally:
            conn.close()

    def target(self) -> str | None:
        entries = self._rows("ORDER BY seq DESC LIMIT 1")
        return entries[0].target if entries else None

    def version(self) -> object:
        with self._connect() as conn:
            return conn.execute("SELECT max(seq) FROM history").fetchone()[0]

    def history(self) -> list[AliasEntry]:
        return self._rows("ORDER BY seq")

    def set(self, target: str, *, note: str = "", forced: bool = False) -> AliasEntry:
        """Name ``target`` from now on (durable when this returns)."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            now = time.time()
            cur = conn.execute("INSERT INTO history (target, at, note, forced) VALUES (?, ?, ?, ?)",
                               (target, now, note, int(forced)))
            conn.execute("COMMIT")
        return AliasEntry(int(cur.lastrowid), target, now, note, forced)

    def _rows(self, order: str) -> list[AliasEntry]:
        with self._connect() as conn:
            rows = conn.execute(f"SELECT seq, target, at, note, forced FROM history {order}").fetchall()
        return [AliasEntry(int(r[0]), r[1], float(r[2]), r[3], bool(r[4])) for r in rows]

    def close(self) -> None:
        pass  # a connection per call: nothing held


def is_alias_directory(location: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(os.fspath(location), ALIAS_FILE))


def previous_target(alias: Alias) -> str | None:
    """The target the alias named before the current one (what a rollback goes back to), or None."""
    entries = alias.history()
    current = entries[-1].target if entries else None
    return next((e.target for e in reversed(entries) if e.target != current), None)


def open_alias(location: str | os.PathLike) -> Alias | None:
    """The alias ``location`` names, or None when it names an index (or nothing)."""
    from index.location import parse_location

    parsed = parse_location(os.fspath(location))
    if parsed is None:
        return AliasDirectory.open(location) if is_alias_directory(location) else None
    if parsed.lite:
        return None
    from index.milvus.alias import MilvusAlias

    return MilvusAlias.open_if_alias(parsed)


def create_alias(location: str | os.PathLike, like_target: str) -> Alias:
    """A new alias at ``location``: a folder, or a Milvus alias on the server of ``like_target``."""
    from index.location import parse_location

    parsed = parse_location(os.fspath(location))
    if parsed is None:
        return AliasDirectory.create(location)
    from index.milvus.alias import MilvusAlias

    return MilvusAlias.create(parsed, like_target)


def resolve(location: str | os.PathLike) -> str:
    """The index ``location`` names: the target of an alias, or ``location`` itself."""
    alias = open_alias(location)
    if alias is None:
        return os.fspath(location)
    try:
        target = alias.target()
    finally:
        alias.close()
    if target is None:
        raise IndexStoreError(f"alias {os.fspath(location)} names no index yet; set it with: simsearch alias set "
                              f"{os.fspath(location)} INDEX")
    return target
