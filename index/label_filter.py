"""Label filters that keep their promise: ``k`` hits of the class asked for, on every index type.

A filtered FAISS search visits a bounded number of candidates (HNSW about ``efSearch`` nodes of the graph,
IVF the ``nprobe`` nearest lists) and keeps those of the class, so for a rare class it returns fewer than
``k`` hits, and not the nearest ones (measured on 100k vectors, HNSW32, ef 64, k=10: a 0.5% class gets 4.4
hits on average, recall 0.40).  :class:`LabelFilter` therefore answers

- a class of at most ``IndexConfig.exact_filter_max`` live items exactly: brute force over that class's
  vectors (as stored in SQLite), like Lucene's exact search below its filter cost, or Qdrant's full scan
  below ``full_scan_threshold``;
- a larger class through FAISS with an ``IDSelector`` over the class's ids, the walk widened to
  ``ef = k / selectivity`` (capped at ``FILTER_EF_MAX``); a query that still comes back short of
  ``min(k, class size)`` hits is answered exactly.

The class's vectors and ids are cached per label and caught up from the change log like the view (one
indexed query when nothing changed), so a filtered search neither reads the class from SQLite nor loads
every id of a large class each time.  Cached vectors are bounded by ``CLASS_CACHE_BYTES`` (least recently
used first out); cached ids by the collection (8 bytes per item).  The id set of a large class may keep ids
deleted since it was read: the view's tombstones filter them out, and ids are never reused.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from index.db import StoreDB
from index.view import IndexView
from index.rerank import rerank as exact_rerank

CLASS_CACHE_BYTES = 128 * 2**20  # cached class vectors per process (a 20k x 128-d class is 10 MB)
FILTER_EF_MAX = 2048  # the widest HNSW walk of a filtered search (~3 ms a query at 100k x 64-d)


@dataclass
class _Class:
    """One label's items at log position ``head``: ``ids (m,) int64`` ascending, ``xb (m, d) float32`` or
    None (ids only)."""

    head: int
    ids: np.ndarray
    xb: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + (self.xb.nbytes if self.xb is not None else 0)


def exact_search(xq: np.ndarray, ids: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest inner products of each query ``xq: (nq, d) float32`` with ``xb: (m, d) float32``,
    whose ids are ``ids: (m,) int64`` ascending: ``(D, I)``, each ``(nq, min(k, m))``, best first, equal
    scores in id order."""
    k = min(k, len(ids))
    if k == 0:
        return np.zeros((len(xq), 0), np.float32), np.zeros((len(xq), 0), np.int64)
    S = xq @ xb.T
    D = np.empty((len(xq), k), dtype=np.float32)
    I = np.empty((len(xq), k), dtype=np.int64)
    for row, scores in enumerate(S):
        if k < len(scores):  # every item scoring at least the k-th best (ties at the boundary included)
            kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
            candidates = np.flatnonzero(scores >= kth)
        else:
            candidates = np.arange(len(scores))
        best = candidates[np.lexsort((candidates, -scores[candidates]))[:k]]  # by score, then by id
        D[row], I[row] = scores[best], ids[best]
    return D, I


class LabelFilter:
    """Filtered searches of one index (see the module docstring); thread-safe, one per :class:`IndexStore`."""

    def __init__(self, db: StoreDB, dim: int, exact_max: int, cache_bytes: int = CLASS_CACHE_BYTES) -> None:
        self._db = db
        self._dim = dim
        self._exact_max = exact_max
        self._cache_bytes = cache_bytes
        self._vectors: OrderedDict[str, _Class] = OrderedDict()  # least recently used first
        self._ids: dict[str, _Class] = {}
        self._lock = threading.Lock()

    def search(self, view: IndexView, xq: np.ndarray, k: int, label: str, *, ef_search: int,
               nprobe: int, rerank: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(D, I)`` as :meth:`IndexView.search`, among the live items carrying ``label`` only (compressed
        codes: the FAISS candidates re-ranked by their exact vectors, as unfiltered searches are)."""
        count = self._db.label_count(label)
        if count == 0:  # (nothing cached for a label no item carries)
            return np.zeros((len(xq), 0), np.float32), np.zeros((len(xq), 0), np.int64)
        if count <= self._exact_max:
            return exact_search(xq, *self.vectors(label), k)
        ef_search = max(ef_search, min(k * max(view.live, 1) // count, FILTER_EF_MAX))
        depth = view.rerank_depth(k, rerank)
        with view.lock.read():
            D, I = view.search(xq, depth or k, ef_search=ef_search, nprobe=nprobe, allowed=self.ids(label))
        if depth:
            D, I = exact_rerank(xq, I, lambda ids: self._db.vectors_of(ids, self._dim), k)
        short = (I >= 0).sum(axis=1) < min(k, count)
        if short.any():  # a walk that met too few of the class: answer those queries exactly
            xD, xI = exact_search(xq[short], *self.vectors(label), k)
            width = max(D.shape[1], xD.shape[1])
            D, I = _pad(D, width, 0.0), _pad(I, width, -1)
            D[short], I[short] = _pad(xD, width, 0.0), _pad(xI, width, -1)
        return D, I

    def vectors(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (m,) int64 ascending, xb (m, d) float32)`` of the live items carrying ``label`` now."""
        with self._lock:
            entry = self._caught_up(label, self._vectors.get(label), with_vectors=True)
            self._vectors[label] = entry
            self._vectors.move_to_end(label)
            while sum(e.nbytes for e in self._vectors.values()) > self._cache_bytes and len(self._vectors) > 1:
                self._vectors.popitem(last=False)
            if entry.nbytes > self._cache_bytes:
                del self._vectors[label]
        return entry.ids, entry.xb

    def ids(self, label: str) -> np.ndarray:
        """``(m,) int64``: every live id carrying ``label``, and perhaps ids of that label deleted since."""
        with self._lock:
            entry = self._ids[label] = self._caught_up(label, self._ids.get(label), with_vectors=False)
        return entry.ids

    def _caught_up(self, label: str, entry: _Class | None, *, with_vectors: bool) -> _Class:
        """``entry`` with the log after its head applied, or the class read afresh (new, or the log was
        pruned past it).  Caller holds the lock."""
        with self._db.read_transaction() as conn:
            tail = None if entry is None else StoreDB.log_tail(conn, entry.head)
            if tail is None:
                head = StoreDB.head(conn)
                if with_vectors:
                    return _Class(head, *StoreDB.label_vectors(conn, label, self._dim))
                return _Class(head, StoreDB.label_ids(conn, label), None)
            head, added, deleted = tail
            if head == entry.head:
                return entry
            new_ids, new_xb = StoreDB.label_vectors(conn, label, self._dim, ids=added) if added else (None, None)
        ids, xb = entry.ids, entry.xb
        if with_vectors and deleted:
            keep = ~np.isin(ids, np.asarray(deleted, dtype=np.int64))
            ids, xb = ids[keep], xb[keep]
        if new_ids is not None and len(new_ids):
            ids = np.concatenate([ids, new_ids])
            xb = np.concatenate([xb, new_xb]) if with_vectors else None
            if len(entry.ids) and new_ids[0] < entry.ids[-1]:  # ids copied in by a replica: keep the order
                order = np.argsort(ids, kind="stable")
                ids, xb = ids[order], (xb[order] if with_vectors else None)
        return _Class(head, ids, xb)


def _pad(a: np.ndarray, width: int, fill) -> np.ndarray:
    """``a: (nq, w)`` padded on the right with ``fill`` to ``(nq, width)``."""
    if a.shape[1] == width:
        return a
    out = np.full((a.shape[0], width), fill, dtype=a.dtype)
    out[:, :a.shape[1]] = a
    return out
