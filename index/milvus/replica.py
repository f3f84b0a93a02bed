"""A Milvus collection as a replica (:class:`index.base.Replicable`): the half of :class:`MilvusStore` that
:mod:`engine.lifecycle` uses to re-embed a collection behind a live server and to seal the old one.

* The replica state is a collection property of its own, ``simsearch.replica_of`` (JSON; "" for none), kept
  apart from the model stamp so that no rewrite of one can undo the other.  It is read from the server at
  every use, never cached: another process seals a collection by setting it.
* An ordinary :meth:`MilvusStore.add` or :meth:`MilvusStore.remove` reads it first (one ``describe_collection``
  call, well under a millisecond on a local server) and refuses with :class:`IndexSupersededError` when it is
  set.  Milvus has no transaction, so the check and the insert are two calls: a write whose check passed just
  before a switch sealed the collection may land after the switch's catch-up.  The switch therefore sweeps the
  two id sets once more after a grace period (:func:`engine.lifecycle.switch`).
* :meth:`replicate` is several calls, ordered so that a crash at any point leaves what a rerun repairs: the id
  range is recorded, the missing items are inserted (ids already present are skipped: Milvus would store a
  second row under a primary key it already has), ``deleted`` are deleted, and the state is recorded last.
* Milvus keeps no change log that simsearch can read: :meth:`log_tail` is None, and a catch-up compares
  :meth:`live_ids` of both stores.
"""

from __future__ import annotations

import json

import numpy as np

from index.arrays import check_ids
from index.base import ItemMeta, LogTail, ReplicaState
from index.errors import IndexSupersededError

REPLICA_PROPERTY = "simsearch.replica_of"


class MilvusReplication:
    """The :class:`index.base.Replicable` methods of :class:`index.milvus.MilvusStore` (a mixin: it works through
    the store's ``_run``, ``_rows``, ``_insert``, ``_remove``, ``_iterate``, ``get_many`` and
    ``record_import``)."""

    def replica_state(self) -> ReplicaState | None:
        """The store this collection is a replica of, read from the server (one ``describe_collection``)."""
        described = self._run("read the replica state", self._client.describe_collection, self._location.collection)
        raw = (described.get("properties") or {}).get(REPLICA_PROPERTY)
        return ReplicaState.from_dict(json.loads(raw)) if raw else None

    def set_replica_state(self, state: ReplicaState | None) -> None:
        """Record ``state`` (None: the collection is primary again, and takes ordinary writes)."""
        value = "" if state is None else json.dumps(state.to_dict(), sort_keys=True)
        self._run("record the replica state", self._client.alter_collection_properties, self._location.collection,
                  properties={REPLICA_PROPERTY: value})

    def replicate(self, vectors: np.ndarray, items: list[ItemMeta], *, deleted=(),
                  state: ReplicaState | None = None, descriptors: np.ndarray | None = None) -> tuple[int, int]:
        """Insert ``items`` under their own ids and times with ``vectors: (n, d) float32`` (ids already present
        are skipped), delete the ids ``deleted``, then record ``state`` (if given); allowed on a replica.  Not
        one transaction (see the module docstring): repeat it after a failure.  Returns (added, deleted).
        ``descriptors``: refused, a collection keeps one vector per item."""
        if descriptors is not None:
            raise ValueError(f"{self.location} keeps no second vector per item; pass no descriptors")
        items = list(items)
        deleted = check_ids(list(deleted)) if len(deleted) else np.zeros(0, np.int64)
        new = np.zeros(0, np.int64)
        if items:
            if len(vectors) != len(items):
                raise ValueError(f"{len(items)} items but {len(vectors)} vectors")
            xb, labels, paths, sources = self._rows(vectors, [m.label for m in items], [m.path for m in items],
                                                    [m.source or "" for m in items])
            ids = check_ids([m.id for m in items])
            seen = set(self.get_many(ids))  # Strong: sees every row an interrupted earlier call inserted
            new = []
            for i, item_id in enumerate(ids.tolist()):
                if item_id not in seen:  # (an id twice in one batch: the first one, as a second call would)
                    seen.add(item_id)
                    new.append(i)
            new = np.array(new, dtype=np.int64)
        if len(new):
            self.record_import(ids[new])  # before the rows: a crash leaves a range a little too wide, never short
            self._insert(xb[new], ids[new], [labels[i] for i in new], [paths[i] for i in new],
                         [sources[i] for i in new], np.array([items[i].added_at for i in new], dtype=np.float64))
        gone = self._remove(deleted) if len(deleted) else []
        if state is not None:
            self.set_replica_state(state)
        return len(new), len(gone)

    def log_tail(self, seq: int) -> LogTail | None:
        """None: Milvus keeps no change log simsearch can read (a catch-up compares :meth:`live_ids`)."""
        return None

    def live_ids(self) -> np.ndarray:
        """Every id, ``(n,) int64`` sorted (the id field only, ``ITER_BATCH`` per round trip)."""
        ids = np.fromiter((int(row["id"]) for row in self._iterate(["id"])), dtype=np.int64)
        ids.sort()
        return ids

    def _check_primary(self) -> None:
        """Refuse an ordinary write to a replica (read from the server at each write; not transactional with it,
        see the module docstring)."""
        state = self.replica_state()
        if state is not None:
            raise IndexSupersededError(self.location, state.location)
