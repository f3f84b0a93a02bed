"""``DescriptorSpace``: the second vector of every item of an index directory, and this process's view of it.

An index built with a copy descriptor beside its class model keeps both vectors of an item in one row set of
the truth: ``items.vector`` (the class embedding, searched by :meth:`IndexStore.search`) and
``descriptors.vector`` (the copy descriptor), written in the same transaction, deleted together (a trigger), and
ordered by the same change log.  Duplicate candidates come from this space's own search, so finding an item's
copies costs one k-NN search, never a pass over every pair.

The view is exact (``IDMap2,Flat`` over L2-normalised vectors, inner product): duplicates are judged on their
cosine, so the candidates must not depend on an approximate walk.  It is built from the truth the first time a
process needs it (one read of the ``descriptors`` table, in chunks) and caught up from the change log before
every search, like the main view; deletes are tombstones until they reach :data:`REBUILD_FRACTION` of the view,
which is then built again.  No snapshot is written: a process that never looks for copies never builds it.
Memory: ``4 * dim`` bytes per item (512 bytes at 128-d).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from index import factory
from index.arrays import check_positive_int, check_vectors, normalized
from index.base import ItemMeta, Neighbor
from index.config import IndexConfig
from index.db import DESCRIPTORS, StoreDB
from index.view import IndexView

logger = logging.getLogger(__name__)

REBUILD_FRACTION = 0.2  # tombstones past this share of the view's vectors: build it again from the truth
FLAT = "flat"


class DescriptorSpace:
    """The copy descriptors of one index directory (``dim``-d, made by the model ``model_info`` names).

    It answers what the duplicate finders ask of a store: :meth:`search`, :meth:`all_vectors`, :meth:`get_many`.
    Thread-safe; the store that owns the database creates it."""

    def __init__(self, db: StoreDB, dim: int, model_info: dict, config: IndexConfig) -> None:
        self._db = db
        self.dim = dim
        self.model_info = dict(model_info)
        self._config = config
        self._view: IndexView | None = None
        self._lock = threading.Lock()  # one thread builds or catches up the view at a time

    def _current(self) -> IndexView:
        """The view caught up with the log head (one cheap query when nothing changed)."""
        head = self._db.head_and_snapshot()[0]
        view = self._view
        if view is not None and view.seq >= head:
            return view
        with self._lock:
            view = self._view
            if view is None or view.seq < head:
                self._view = view = self._caught_up(view)
        return view

    def _caught_up(self, view: IndexView | None) -> IndexView:
        with self._db.read_transaction() as conn:
            floor = int(StoreDB.get_setting(conn, "log_floor", 0))
            if view is not None and view.seq >= floor and view.tombstone_count <= REBUILD_FRACTION * view.stored:
                changes = StoreDB.changes_since(conn, view.seq, self.dim, DESCRIPTORS)
                with view.lock.write():
                    view.apply(changes)
                return view
            started = time.perf_counter()
            built = IndexView.build(StoreDB.iter_vectors(conn, self.dim, table=DESCRIPTORS),
                                    sample=lambda _n: np.zeros((0, self.dim), np.float32), dim=self.dim,
                                    config=self._config, index_type=FLAT,
                                    factory_string=factory.factory_string(FLAT, self.dim, self._config, 0),
                                    seq=StoreDB.head(conn))
        logger.info("built the descriptor view over %d vectors at seq %d in %.2f s", built.stored, built.seq,
                    time.perf_counter() - started)
        return built

    def __len__(self) -> int:
        return self._current().live

    def search(self, xq: np.ndarray, k: int, **_options) -> list[list[Neighbor]]:
        """The ``k`` items whose descriptors are nearest each query ``xq: (nq, dim) float32`` (normalised here),
        best first, ``similarity`` their cosine; every committed write is seen."""
        xq = normalized(check_vectors(xq, self.dim, "xq"), "xq") if len(xq) else check_vectors(xq, self.dim, "xq")
        k = check_positive_int(k, "k")
        view = self._current()
        with view.lock.read():
            D, I = view.search(xq, k, ef_search=k, nprobe=1)
        metas = self._db.items(np.unique(I[I >= 0]).tolist()) if I.size else {}
        return [[Neighbor.of(i, sim, metas[i]) for sim, i in zip(dists, ids) if i >= 0 and i in metas]
                for dists, ids in zip(D.tolist(), I.tolist())]

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (n,) int64, xd (n, dim) float32)`` of every live item, sorted by id, from the truth."""
        with self._db.read_transaction() as conn:
            return StoreDB.all_vectors(conn, self.dim, table=DESCRIPTORS)

    def vectors(self, ids) -> dict[int, np.ndarray]:
        """The descriptors of the live items among ``ids``, keyed by id."""
        return self._db.vectors([int(i) for i in ids], self.dim, DESCRIPTORS)

    def random_ids(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``min(n, live items)`` distinct live ids drawn with ``rng`` (every item has its descriptor)."""
        return self._db.random_ids(check_positive_int(n, "n"), rng, self._db.count())

    def get_many(self, ids) -> dict[int, ItemMeta]:
        return self._db.items([int(i) for i in ids])

    def stats(self) -> dict:
        """The space's dimension, model and, once this process built its view, how many vectors it holds."""
        view = self._view
        return {"dim": self.dim, "model": dict(self.model_info),
                "view_vectors": None if view is None else view.live}


__all__ = ["DescriptorSpace", "REBUILD_FRACTION"]
