"""A Milvus alias as a simsearch alias (:class:`index.alias.Alias`): ``milvus://HOST:PORT/ALIAS``.

The current target is Milvus's own alias (``alter_alias`` switches it atomically for every client; searches
and writes through the alias name reach the collection it names).  Milvus keeps no history of an alias, so
simsearch keeps it on the same server, as collection metadata: one JSON property per alias,
``simsearch.alias.<ALIAS>``, on one small collection that holds no rows, ``simsearch_aliases``.  Collection
properties are metadata that the server keeps consistent at once (no segments, no load, no time tick), and one
property per alias means that switching one alias never rewrites another's history.

A switch points the alias first and records it second: a crash in between leaves the alias right and its
history one entry short, and :meth:`MilvusAlias.history` then reports the current target as a last entry
"not recorded" (written down by the next :meth:`MilvusAlias.set`).  Two sets of one alias at the same moment
are ordered by Milvus; the history may keep only one of their two entries.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace

from index.alias import AliasEntry
from index.errors import IndexStoreError
from index.location import MilvusLocation, parse_location
from index.milvus.client import connect, import_pymilvus, timeout_s
from index.milvus.errors import call
from index.milvus.store import META_PROPERTY

logger = logging.getLogger(__name__)

HISTORY_COLLECTION = "simsearch_aliases"
HISTORY_PREFIX = "simsearch.alias."  # + the alias name: that alias's history, a JSON list, oldest first
MAX_HISTORY = 500  # entries kept per alias (the oldest are dropped)
UNRECORDED = "not recorded by simsearch (set by another tool, or a set interrupted before recording it)"


class MilvusAlias:
    """Open with :meth:`open_if_alias`, make with :meth:`create`; holds one client (:meth:`close` it)."""

    def __init__(self, location: MilvusLocation, client) -> None:
        self._location = location
        self._client = client
        self._timeout = timeout_s()

    @classmethod
    def open_if_alias(cls, location: MilvusLocation) -> "MilvusAlias | None":
        """The alias ``location`` names, or None when it names a collection (or nothing) on its server."""
        client = connect(location)
        try:
            found = call(location, "list the aliases", client.list_aliases, timeout=timeout_s())
        except BaseException:
            client.close()
            raise
        if location.collection not in (found.get("aliases") or []):
            client.close()
            return None
        return cls(location, client)

    @classmethod
    def create(cls, location: MilvusLocation, like_target: str) -> "MilvusAlias":
        """A new alias at ``location`` naming ``like_target`` (a simsearch collection on the same server: a
        Milvus alias always names a collection), with that as its first history entry."""
        alias = cls(location, connect(location))
        try:
            target = alias._check_target(like_target)
            if alias._run("check the name", alias._client.has_collection, location.collection):
                raise IndexStoreError(f"{location.display} already names a collection or an alias; pick another name")
            alias._run("create the alias", alias._client.create_alias, target.collection, location.collection)
            alias._record([], target.collection, note="created", forced=False)
        except BaseException:
            alias.close()
            raise
        logger.info("created Milvus alias %s -> %s", location.display, target.collection)
        return alias

    # ------------------------------------------------------------------ the Alias interface
    @property
    def location(self) -> str:
        return self._location.display

    def target(self) -> str | None:
        """The location of the collection the alias names now, ``milvus://HOST:PORT/COLLECTION``."""
        return self._display(self._current())

    def version(self) -> object:
        """The name of the collection the alias names now: one ``describe_alias`` call."""
        return self._current()

    def history(self) -> list[AliasEntry]:
        """Every recorded switch, oldest first (the newest :data:`MAX_HISTORY`), and the current target as a
        last entry when the record misses it."""
        return [self._entry(e) for e in self._entries()]

    def set(self, target: str, *, note: str = "", forced: bool = False) -> AliasEntry:
        """Name ``target`` (a simsearch collection on this server) from now on: the alias switches atomically
        for every client, then the switch is recorded."""
        parsed = self._check_target(target)
        entries = self._entries()
        self._run("switch the alias", self._client.alter_alias, parsed.collection, self._location.collection)
        logger.info("Milvus alias %s -> %s", self.location, parsed.collection)
        return self._record(entries, parsed.collection, note=note, forced=forced)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing a client of a dead server must not fail
            logger.debug("closing the Milvus client failed", exc_info=True)

    # ------------------------------------------------------------------ plumbing
    def _check_target(self, target: str) -> MilvusLocation:
        """``target`` as a collection of this server, or IndexStoreError saying why it cannot be named."""
        parsed = parse_location(os.fspath(target))
        if parsed is None or parsed.lite or parsed.uri != self._location.uri:
            shown = os.fspath(target) if parsed is None else parsed.display
            raise IndexStoreError(f"alias {self.location} can name only a collection on its own server "
                                  f"({self._display('COLLECTION')}), not {shown}")
        if not self._run("check the target", self._client.has_collection, parsed.collection):
            raise IndexStoreError(f"{parsed.display}: no such collection")
        described = self._run("describe the target", self._client.describe_collection, parsed.collection)
        if described.get("collection_name", parsed.collection) != parsed.collection:
            raise IndexStoreError(f"{parsed.display} is an alias: an alias names a collection, not another alias")
        if META_PROPERTY not in (described.get("properties") or {}):
            raise IndexStoreError(f"{parsed.display} is not a simsearch collection (no {META_PROPERTY} property)")
        return parsed

    def _current(self) -> str:
        described = self._run("describe the alias", self._client.describe_alias, self._location.collection)
        return described["collection_name"]

    def _entries(self) -> list[dict]:
        """The recorded entries (dicts), with the current target appended when the record misses it."""
        entries = self._recorded()
        current = self._current()
        if not entries or entries[-1]["collection"] != current:
            entries.append({"seq": (entries[-1]["seq"] if entries else 0) + 1, "collection": current, "at": 0.0,
                            "note": UNRECORDED, "forced": False})
        return entries

    def _recorded(self) -> list[dict]:
        if not self._run("check the alias history", self._client.has_collection, HISTORY_COLLECTION):
            return []
        described = self._run("read the alias history", self._client.describe_collection, HISTORY_COLLECTION)
        raw = (described.get("properties") or {}).get(HISTORY_PREFIX + self._location.collection)
        return json.loads(raw) if raw else []

    def _record(self, entries: list[dict], collection: str, *, note: str, forced: bool) -> AliasEntry:
        entry = {"seq": (entries[-1]["seq"] if entries else 0) + 1, "collection": collection, "at": time.time(),
                 "note": note, "forced": bool(forced)}
        kept = json.dumps((entries + [entry])[-MAX_HISTORY:])
        self._history_collection()
        self._run("record the alias history", self._client.alter_collection_properties, HISTORY_COLLECTION,
                  properties={HISTORY_PREFIX + self._location.collection: kept})
        return self._entry(entry)

    def _history_collection(self) -> None:
        """Create ``simsearch_aliases`` unless it exists (Milvus wants a vector field even where no row goes)."""
        if self._run("check the alias history", self._client.has_collection, HISTORY_COLLECTION):
            return
        DataType = import_pymilvus().DataType
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False,
                                            description="simsearch alias histories (no rows: a property per alias)")
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
        try:
            self._run("create the alias history", self._client.create_collection, HISTORY_COLLECTION, schema=schema)
        except IndexStoreError:
            if not self._run("check the alias history", self._client.has_collection, HISTORY_COLLECTION):
                raise  # not a concurrent create that won the race

    def _entry(self, entry: dict) -> AliasEntry:
        return AliasEntry(int(entry["seq"]), self._display(entry["collection"]), float(entry["at"]),
                          entry.get("note", ""), bool(entry.get("forced", False)))

    def _display(self, collection: str) -> str:
        return replace(self._location, collection=collection).display

    def _run(self, what: str, fn, *args, **kwargs):
        kwargs.setdefault("timeout", self._timeout)
        return call(self._location, what, fn, *args, **kwargs)
